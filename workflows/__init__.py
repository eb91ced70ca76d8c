"""Training workflow of c2f-pose: configuration (stages.yaml), one Ray Train job per curriculum
stage (``workflows/stage.py``), evaluation (``workflows/evaluate.py``) and the DVC pipeline glue.

Run the scripts from the repository root, e.g. ``python -m workflows.stage --d2 16``; they also
work as modules (``python -m workflows.stage --d2 16``).
"""
