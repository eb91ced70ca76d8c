"""2D→3D lifting: Martinez' residual MLP (supervised) and Chen et al.'s (CVPR 2019) geometric
self-supervision, beside the C2F core (``workflows/lift.py`` runs them).

- :mod:`pose.lifting.geometry` — unit space (root-centred, scale-normalised 2D), rotations, projections.
- :mod:`pose.lifting.model` — the lifter and discriminator networks, checkpoints, ``lift_2d`` (px → mm).
- :mod:`pose.lifting.training` — the cycle (lift → rotate → project → lift → rotate back), the losses,
  ``train_unsupervised`` / ``train_supervised``.
- :mod:`pose.lifting.data` — pose sets: packed splits, 2D-only ``.npz`` files, the real fixture, clips.

Their metrics (N-MPJPE, sign-agnostic PA-MPJPE) are in :mod:`pose.metrics`. The names below are the
package's public API.
"""

from pose.lifting.geometry import (
    NUM_JOINTS,
    depth_to_3d,
    flat_pose,
    normalize_2d,
    pose_scale,
    project,
    random_rotation,
    rotate,
    unrotate,
)
from pose.lifting.model import (
    NOMINAL_UNIT_MM,
    Discriminator,
    Lifter,
    LifterConfig,
    ResidualMLP,
    lift,
    lift_2d,
    load_lifter,
    predict_3d,
    save_lifter,
)
from pose.lifting.training import (
    BONE_TEMPLATE_MM,
    Checkpointing,
    CycleOutput,
    SupervisedConfig,
    UnsupervisedConfig,
    bone_ratio_loss,
    cap_gates,
    config_from_dict,
    cycle,
    cycle_losses,
    disc_accuracy,
    disc_loss,
    gen_adv_loss,
    kudo_heuristic_loss,
    train_supervised,
    train_unsupervised,
)

__all__ = [
    "NOMINAL_UNIT_MM",
    "NUM_JOINTS",
    "CycleOutput",
    "Discriminator",
    "Lifter",
    "LifterConfig",
    "ResidualMLP",
    "SupervisedConfig",
    "UnsupervisedConfig",
    "cap_gates",
    "config_from_dict",
    "cycle",
    "cycle_losses",
    "depth_to_3d",
    "disc_accuracy",
    "disc_loss",
    "flat_pose",
    "gen_adv_loss",
    "kudo_heuristic_loss",
    "BONE_TEMPLATE_MM",
    "bone_ratio_loss",
    "lift",
    "lift_2d",
    "load_lifter",
    "normalize_2d",
    "pose_scale",
    "predict_3d",
    "project",
    "random_rotation",
    "rotate",
    "save_lifter",
    "Checkpointing",
    "train_supervised",
    "train_unsupervised",
    "unrotate",
]
