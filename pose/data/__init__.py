"""Datasets: readers of the two Human3.6M on-disk layouts, the packed format, the torch Dataset.

- :mod:`pose.data.seed_txt` — the Caffe seed's per-sample txt layout (``SeedTxtReader``).
- :mod:`pose.data.h36m_json` — the Human3.6M annotation JSON layout (``H36MJsonReader``).
- :mod:`pose.data.prepare` — ``pose prepare``: validate and pack (``prepare``, ``pack_split``).
- :mod:`pose.data.packed` — the packed format (``PackWriter``, ``ImageStore``, ``load_poses``).
- :mod:`pose.data.dataset` — ``PackedDataset`` (crop, augmentation, sample dict).
- :mod:`pose.data.augment` — ``AugConfig``, ``AugParams``, flip helpers.

- ``c2f_vol_demo/`` (:data:`C2F_VOL_DEMO`) — 394 real Human3.6M poses of S9 with their cameras and
  person boxes (``valid.npz``) and C2F's depth-bin edges (``voxel_limits.npz``), from c2f-vol-demo
  (its LICENSE beside them): the pipeline's real-pose test split, and geometry fixtures of the tests.

Names are imported lazily so that ``pose synth`` / ``pose prepare`` do not pay for torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

#: the folder of the c2f-vol-demo real Human3.6M data shipped with the package (see the docstring)
C2F_VOL_DEMO = Path(__file__).resolve().parent / "c2f_vol_demo"

_EXPORTS = {
    "AugConfig": "pose.data.augment", "AugParams": "pose.data.augment",
    "PackedDataset": "pose.data.dataset", "make_sample": "pose.data.dataset",
    "ImageStore": "pose.data.packed", "load_arrays": "pose.data.packed", "load_poses": "pose.data.packed",
    "read_meta": "pose.data.packed",
    "BadSample": "pose.data.records", "RawSample": "pose.data.records",
}
__all__ = sorted([*_EXPORTS, "C2F_VOL_DEMO"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pose.data' has no attribute {name!r}")
