"""Human3.6M joint sets: the native 32, the 17 used by C2F/Integral, the Caffe seed's 16.

Index tables as in the H36M metadata and the C2F/Integral code. All indices are 0-based. Sides follow H36M metadata naming
(32-joint index 1 is ``RightUpLeg``): in the 17-joint set, 1-3 are the right leg, 4-6 the left
leg, 11-13 the left arm and 14-16 the right arm.
"""

from __future__ import annotations

import numpy as np

# --- 32 joints (H36M native "D3_Positions") --------------------------------------------------
JOINT_NAMES_32: tuple[str, ...] = (
    "Hips", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase", "Site",
    "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "Site",
    "Spine", "Spine1", "Neck", "Head", "Site",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LeftHandThumb", "Site",
    "L_Wrist_End", "Site",
    "RightShoulder", "RightArm", "RightForeArm", "RightHand", "RightHandThumb", "Site",
    "R_Wrist_End", "Site",
)
PARENTS_32: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14,
    12, 16, 17, 18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30,
)

# --- 17 joints (C2F / Integral / VideoPose3D / Martinez) --------------------------------------
H36M_17_FROM_32: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
JOINT_NAMES_17: tuple[str, ...] = (
    "Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle",
    "Torso", "Neck", "Nose", "Head", "L_Shoulder", "L_Elbow", "L_Wrist",
    "R_Shoulder", "R_Elbow", "R_Wrist",
)
PARENTS_17: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
FLIP_PAIRS_17: tuple[tuple[int, int], ...] = ((1, 4), (2, 5), (3, 6), (14, 11), (15, 12), (16, 13))
LEFT_17: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
RIGHT_17: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
ROOT = 0
#: Bones for drawing, (parent, child) pairs (mks0601 order).
BONES_17: tuple[tuple[int, int], ...] = tuple((p, c) for c, p in enumerate(PARENTS_17) if p >= 0)

#: Joint groups of the 17-joint set for per-limb errors (``pose.metrics.group_errors``): the torso
#: with hips, shoulders and head (pelvis included: 0 mm after root alignment, counted in 2D and PA),
#: the arms (elbows, wrists) and the legs (knees, ankles).
JOINT_GROUPS_17: dict[str, tuple[int, ...]] = {
    "torso": (0, 1, 4, 7, 8, 9, 10, 11, 14), "arms": (12, 13, 15, 16), "legs": (2, 3, 5, 6),
}

# --- 16 joints (Caffe seed "usable" set = 17 minus Torso) --------------------------------------
H36M_16_FROM_32: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 13, 14, 15, 17, 18, 19, 25, 26, 27)
H36M_16_FROM_17: tuple[int, ...] = tuple(H36M_17_FROM_32.index(i) for i in H36M_16_FROM_32)
JOINT_NAMES_16: tuple[str, ...] = tuple(JOINT_NAMES_17[i] for i in H36M_16_FROM_17)
PARENTS_16: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 7, 10, 11, 7, 13, 14)
FLIP_PAIRS_16: tuple[tuple[int, int], ...] = ((1, 4), (2, 5), (3, 6), (13, 10), (14, 11), (15, 12))
BONES_16: tuple[tuple[int, int], ...] = tuple((p, c) for c, p in enumerate(PARENTS_16) if p >= 0)

#: Mean training limb lengths of C2F (``limb_train.mat``, S1,S5,S6,S7,S8), mm, in the order of
#: ``LIMBS_C2F_17`` (C2F's tree traversal, mapped onto our 17-joint indices).
LIMBS_C2F_17: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 4), (0, 7), (1, 2), (2, 3), (4, 5), (5, 6), (7, 8),
    (8, 9), (8, 11), (8, 14), (9, 10), (11, 12), (12, 13), (14, 15), (15, 16),
)
LIMB_LENGTHS_TRAIN_MM: tuple[float, ...] = (
    134.05, 134.05, 238.38, 449.20, 445.58, 449.21, 445.58, 255.34,
    116.08, 148.84, 148.83, 115.00, 279.76, 249.52, 279.76, 249.52,
)

# --- The 15 actions ----------------------------------------------------------------------------
#: H36M action names by action_idx 2..16 (JSON layout / seed ``info_all``); index 0 and 1 unused.
ACTIONS_H36M: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "TakingPhoto", "Waiting", "Walking", "WalkingDog",
    "WalkingTogether",
)


def _take(joints, index: tuple[int, ...], n_in: int, arg: str):
    if joints.shape[-2] != n_in:
        raise ValueError(f"{arg}: expected {n_in} joints on axis -2, got shape {tuple(joints.shape)}")
    return joints[..., list(index), :]


def to17(joints32):
    """(..., 32, C) → (..., 17, C). Works on numpy arrays and torch tensors."""
    return _take(joints32, H36M_17_FROM_32, 32, "joints32")


def flip_permutation(flip_pairs=FLIP_PAIRS_17, num_joints: int = 17) -> list[int]:
    """Index list that swaps left and right joints: ``flipped = joints[..., perm, :]``."""
    perm = list(range(num_joints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERM_17: tuple[int, ...] = tuple(flip_permutation())
#: Swaps the two legs only, (1, 2, 3) ↔ (4, 5, 6): C2F's 17-joint order (its ``skel_h36m.mat``:
#: joint 2 is ``lhipjoint``; c2f-vol-demo's ``valid.mat``) lists the **left** leg first with the
#: arms as here, so its poses become Human3.6M's order by ``joints[..., SWAP_LEGS_17, :]``.
SWAP_LEGS_17: tuple[int, ...] = (0, 4, 5, 6, 1, 2, 3, *range(7, 17))


def legs_reversed(joints17) -> np.ndarray:
    """Per pose, whether its hips run the opposite way to its shoulders ``(..., 17, 3) → (...)`` bool.

    Across the body (perpendicular to the pelvis → neck axis), Human3.6M's L_Hip − R_Hip points the
    same way as L_Shoulder − R_Shoulder (a torso does not twist by more than 90°); a pose in C2F's
    order (:data:`SWAP_LEGS_17`) has them opposed.
    """
    j = np.asarray(joints17, np.float64)
    if j.shape[-2:] != (17, 3):
        raise ValueError(f"joints17: expected shape (..., 17, 3), got {j.shape}")
    up = j[..., 8, :] - j[..., 0, :]
    up = up / np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-9)

    def across(v):
        return v - (v * up).sum(-1, keepdims=True) * up

    hips, shoulders = across(j[..., 4, :] - j[..., 1, :]), across(j[..., 11, :] - j[..., 14, :])
    return (hips * shoulders).sum(-1) < 0


def limb_lengths(joints17, limbs=LIMBS_C2F_17):
    """(..., 17, 3) → (..., L) bone lengths in the units of the input."""
    a = joints17[..., [p for p, _ in limbs], :]
    b = joints17[..., [c for _, c in limbs], :]
    d = a - b
    if isinstance(d, np.ndarray):
        return np.linalg.norm(d, axis=-1)
    return d.norm(dim=-1)
