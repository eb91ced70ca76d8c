"""The ``pose`` command and the drawing it shares with the evaluation report.

- :mod:`pose.tools.cli` — ``pose synth | prepare | predict | show`` (entry point ``pose``).
- :mod:`pose.tools.predict` — ``pose predict``: images, folders and videos through a checkpoint.
- :mod:`pose.tools.show` — ``pose show``: a packed split's samples with predictions and errors.
- :mod:`pose.tools.viz` — skeletons on images, 3D views, heatmap panels, training curves.
"""
