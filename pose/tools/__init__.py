"""The ``pose`` command (its drawing is the library's :mod:`pose.viz`, shared with the evaluation).

- :mod:`pose.tools.cli` — ``pose synth | prepare | predict | show`` (entry point ``pose``).
- :mod:`pose.tools.predict` — ``pose predict``: images, folders and videos through a checkpoint.
- :mod:`pose.tools.show` — ``pose show``: a packed split's samples with predictions and errors.
"""
