"""3D pose error metrics for Human3.6M-style evaluation (Protocols #1 and #2, per-action tables).

All functions accept numpy arrays or torch tensors (any float dtype, any device; tensors are
detached and copied to the CPU) and return numpy ``float64``. Poses are ``(N, J, 3)`` (a single
pose ``(J, 3)`` is accepted and treated as ``N = 1``), in any unit (mm everywhere in this project).

Conventions (state them when reporting numbers: papers differ on them):

- ``mpjpe`` is **Protocol #1** by default: both poses are root-aligned on joint ``root`` (0 =
  pelvis) before the mean per-joint Euclidean distance; ``root=None`` gives the plain (absolute)
  error. Root alignment is idempotent, so already root-relative inputs are fine either way.
- ``pa_mpjpe`` is **Protocol #2** as VideoPose3D's ``p_mpjpe`` / Martinez'
  ``compute_similarity_transform``: per frame, similarity Procrustes (rotation, translation and
  isotropic scale; reflections excluded by the determinant fix) of the prediction onto the ground
  truth, then MPJPE.
- ``rigid_mpjpe`` is the **no-scale** variant (rotation + translation only; mks0601 / JimmySuen
  ``rigid_align``, which those repositories call "PA MPJPE"); it is never smaller than
  ``pa_mpjpe``.
- ``action_table`` gives both averages: ``frame_weighted`` (mean over all frames, C2F
  ``errorH36M.m`` / mks0601 ``tot``) and ``action_wise`` (mean of the per-action means,
  VideoPose3D).
- ``group_errors`` splits the errors by joint group (``skeleton.JOINT_GROUPS_17``: torso, arms,
  legs): root-aligned MPJPE, PA-MPJPE (the whole pose aligned, then the group's joints) and the 2D
  PCK at a fraction of each sample's person-box side.
- ``pck3d`` / ``auc3d`` are per-sample fractions of joints within a distance threshold (after
  root alignment by default); average them over samples (or feed them to ``action_table``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "H36M_TABLE_ORDER",
    "action_table",
    "auc3d",
    "evaluate_predictions",
    "format_action_table",
    "group_errors",
    "joint_errors",
    "mpjpe",
    "n_mpjpe",
    "pa_mpjpe",
    "pck3d",
    "procrustes_align",
    "rigid_mpjpe",
    "root_align",
]

#: Standard H36M table column order (C2F ``errorH36M.m``, most papers), with the
#: accepted aliases of each action (compared case-insensitively, ignoring spaces/underscores).
H36M_TABLE_ORDER: tuple[tuple[str, ...], ...] = (
    ("Directions", "Direction", "Dir"),
    ("Discussion", "Discuss", "Dis", "Disc"),
    ("Eating", "Eat"),
    ("Greeting", "Greet", "Gre"),
    ("Phoning", "Phone", "Phon"),
    ("Photo", "TakingPhoto", "Phot"),
    ("Posing", "Pose"),
    ("Purchases", "Purchase", "Pur"),
    ("Sitting", "Sit"),
    ("SittingDown", "SitDown", "SitD"),
    ("Smoking", "Smoke", "Smo"),
    ("Waiting", "Wait"),
    ("WalkDog", "WalkingDog", "WalkD"),
    ("Walking", "Walk"),
    ("WalkTogether", "WalkingTogether", "WalkT", "WalkP"),
)


# --- input handling -----------------------------------------------------------------------------
def _to_numpy(x, name: str) -> np.ndarray:
    """numpy array / torch tensor / sequence → float64 numpy array (tensors detached, on CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a numeric array or tensor, got {type(x).__name__}") from exc
    return arr


def _poses(x, name: str) -> np.ndarray:
    """Validate one pose batch: (N, J, 3) or (J, 3) → (N, J, 3) float64, finite."""
    arr = _to_numpy(x, name)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (N, J, 3) or (J, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p = _poses(pred, "pred")
    g = _poses(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred: shape {p.shape} does not match gt shape {g.shape}")
    return p, g


def _check_root(root: int | None, num_joints: int) -> None:
    if root is not None and not (isinstance(root, int | np.integer) and 0 <= root < num_joints):
        raise ValueError(f"root: expected None or a joint index in [0, {num_joints}), got {root!r}")


# --- alignment ----------------------------------------------------------------------------------
def root_align(poses, root: int = 0) -> np.ndarray:
    """Subtract joint ``root`` from every joint: ``(N, J, 3)`` or ``(J, 3)`` → same shape, float64."""
    arr = _to_numpy(poses, "poses")
    if arr.ndim < 2 or arr.shape[-1] != 3:
        raise ValueError(f"poses: expected shape (..., J, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("poses: contains NaN or inf")
    if root is None:
        raise ValueError("root: expected a joint index, got None")
    _check_root(root, arr.shape[-2])
    return arr - arr[..., root : root + 1, :]


def procrustes_align(pred, gt, scale: bool = True) -> np.ndarray:
    """Align ``pred`` onto ``gt`` per frame; returns the aligned prediction ``(N, J, 3)`` float64.

    VideoPose3D ``p_mpjpe`` algorithm (X = gt, Y = pred, J×3 row matrices): centre both, divide by
    their Frobenius norms, H = X0ᵀ Y0 = U diag(s) Vᵀ, R = V Uᵀ; if det(R) < 0 negate the last
    column of V and the last singular value (no reflections); scale a = Σs·‖X0‖/‖Y0‖ (a = 1 when
    ``scale=False``, which is the mks0601 ``rigid_align`` Kabsch solution); t = μX − a·μY R;
    aligned = a·Y R + t. A degenerate pose (all joints identical) gets norm 1 instead of 0.
    """
    p, g = _pair(pred, gt)
    mu_x = g.mean(axis=1, keepdims=True)
    mu_y = p.mean(axis=1, keepdims=True)
    x0 = g - mu_x
    y0 = p - mu_y
    norm_x = np.sqrt((x0**2).sum(axis=(1, 2), keepdims=True))
    norm_y = np.sqrt((y0**2).sum(axis=(1, 2), keepdims=True))
    norm_x = np.where(norm_x > 0, norm_x, 1.0)
    norm_y = np.where(norm_y > 0, norm_y, 1.0)
    x0 = x0 / norm_x
    y0 = y0 / norm_y
    h = np.matmul(x0.transpose(0, 2, 1), y0)  # (N, 3, 3)
    u, s, vt = np.linalg.svd(h)
    v = vt.transpose(0, 2, 1)
    r = np.matmul(v, u.transpose(0, 2, 1))
    sign = np.sign(np.linalg.det(r))  # -1 where the optimum would be a reflection
    sign = np.where(sign == 0, 1.0, sign)
    v[:, :, -1] *= sign[:, None]
    s[:, -1] *= sign
    r = np.matmul(v, u.transpose(0, 2, 1))
    if scale:
        a = s.sum(axis=1)[:, None, None] * norm_x / norm_y
    else:
        a = np.ones((p.shape[0], 1, 1))
    t = mu_x - a * np.matmul(mu_y, r)
    return a * np.matmul(p, r) + t


# --- per-sample errors --------------------------------------------------------------------------
def _joint_errors(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p - g, axis=-1)  # (N, J)


def mpjpe(pred, gt, root: int | None = 0) -> np.ndarray:
    """Mean per-joint position error per sample, ``(N,)`` float64 in the input unit.

    pred, gt: ``(N, J, 3)`` (or ``(J, 3)``). ``root``: joint subtracted from both poses first
    (Protocol #1, default pelvis 0); ``None`` = no alignment (absolute error).
    """
    p, g = _pair(pred, gt)
    _check_root(root, p.shape[1])
    if root is not None:
        p = p - p[:, root : root + 1]
        g = g - g[:, root : root + 1]
    return _joint_errors(p, g).mean(axis=1)


def pa_mpjpe(pred, gt) -> np.ndarray:
    """Procrustes-aligned MPJPE (similarity: rotation, translation, scale), ``(N,)`` float64."""
    _, g = _pair(pred, gt)
    return _joint_errors(procrustes_align(pred, gt, scale=True), g).mean(axis=1)


def rigid_mpjpe(pred, gt) -> np.ndarray:
    """Rigidly aligned MPJPE (rotation + translation, no scale; mks0601 ``rigid_align``), ``(N,)``."""
    _, g = _pair(pred, gt)
    return _joint_errors(procrustes_align(pred, gt, scale=False), g).mean(axis=1)


def _check_threshold(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a number, got {value!r}") from exc
    if not np.isfinite(out) or out < 0:
        raise ValueError(f"{name}: expected a finite value >= 0, got {value!r}")
    return out


def pck3d(pred, gt, threshold: float = 150.0, root: int | None = 0) -> np.ndarray:
    """Per-sample fraction of joints with error ≤ ``threshold`` (mm), ``(N,)`` float64 in [0, 1].

    Poses are root-aligned on ``root`` first (``None``: no alignment). PCK3D@150 mm = ``.mean()``.
    """
    threshold = _check_threshold(threshold, "threshold")
    p, g = _pair(pred, gt)
    _check_root(root, p.shape[1])
    if root is not None:
        p = p - p[:, root : root + 1]
        g = g - g[:, root : root + 1]
    return (_joint_errors(p, g) <= threshold).mean(axis=1)


def auc3d(pred, gt, thresholds=None, root: int | None = 0) -> np.ndarray:
    """Per-sample area under the PCK3D curve, ``(N,)`` float64 in [0, 1].

    ``thresholds`` default: 0, 5, …, 150 mm (31 values, MPI-INF-3DHP convention); the AUC is the
    mean of the PCK over these thresholds.
    """
    if thresholds is None:
        thr = np.linspace(0.0, 150.0, 31)
    else:
        thr = _to_numpy(thresholds, "thresholds").reshape(-1)
        if thr.size == 0 or not np.isfinite(thr).all() or (thr < 0).any():
            raise ValueError("thresholds: expected a non-empty sequence of finite values >= 0")
    p, g = _pair(pred, gt)
    _check_root(root, p.shape[1])
    if root is not None:
        p = p - p[:, root : root + 1]
        g = g - g[:, root : root + 1]
    err = _joint_errors(p, g)  # (N, J)
    return (err[:, :, None] <= thr[None, None, :]).mean(axis=(1, 2))


def joint_errors(pred, gt, root: int | None = 0) -> np.ndarray:
    """Per-joint Euclidean errors ``(N, J)`` float64 (2D or 3D points: ``(N, J, C)``), after
    subtracting joint ``root`` from both (``None``: absolute)."""
    p, g = _to_numpy(pred, "pred"), _to_numpy(gt, "gt")
    if p.ndim != 3 or p.shape != g.shape:
        raise ValueError(f"pred: expected shape (N, J, C) equal to gt's, got {p.shape} and {g.shape}")
    if not (np.isfinite(p).all() and np.isfinite(g).all()):
        raise ValueError("pred/gt: contains NaN or inf")
    _check_root(root, p.shape[1])
    if root is not None:
        p = p - p[:, root : root + 1]
        g = g - g[:, root : root + 1]
    return _joint_errors(p, g)


def group_errors(pred, gt, uv_pred, uv_gt, box_side, groups: Mapping[str, Sequence[int]],
                 pck_fraction: float = 0.1) -> dict[str, dict[str, float]]:
    """Errors per joint group, averaged over samples and the group's joints.

    pred, gt: ``(N, J, 3)`` mm; uv_pred, uv_gt: ``(N, J, 2)`` px (e.g. raw image px); box_side:
    ``(N,)`` the person box side in the same px. Returns ``{group: {"mpjpe": mm (root-aligned on
    joint 0), "pa_mpjpe": mm (whole pose Procrustes-aligned), "pck2d": fraction of joints with 2D
    error ≤ pck_fraction × box_side}}``.
    """
    side = _to_numpy(box_side, "box_side").reshape(-1)
    e3 = joint_errors(pred, gt, root=0)
    if side.shape != (e3.shape[0],) or not (side > 0).all():
        raise ValueError(f"box_side: expected {e3.shape[0]} positive sides, got shape {side.shape}")
    _, g = _pair(pred, gt)
    ea = _joint_errors(procrustes_align(pred, gt, scale=True), g)
    hit = joint_errors(uv_pred, uv_gt, root=None) <= _check_threshold(pck_fraction, "pck_fraction") * side[:, None]
    out = {}
    for name, idx in groups.items():
        idx = list(idx)
        out[name] = {"mpjpe": float(e3[:, idx].mean()), "pa_mpjpe": float(ea[:, idx].mean()),
                     "pck2d": float(hit[:, idx].mean())}
    return out


# --- per-action tables --------------------------------------------------------------------------
def action_table(errors, actions, names: Sequence[str]) -> dict:
    """Per-action averages of per-sample ``errors``.

    errors: ``(N,)`` (e.g. the output of ``mpjpe``); actions: ``(N,)`` integer indices into
    ``names``. Returns ``{"per_action": {name: mean}, "counts": {name: n}, "frame_weighted": mean
    over all N frames, "action_wise": mean of the per-action means, "num_frames": N,
    "num_actions": number of actions present}``. Only actions that occur appear in
    ``per_action``/``counts`` (in the order of ``names``); ``action_wise`` averages those.
    """
    err = _to_numpy(errors, "errors")
    if err.ndim != 1 or err.size == 0:
        raise ValueError(f"errors: expected a non-empty 1-D array (N,), got shape {err.shape}")
    if not np.isfinite(err).all():
        raise ValueError("errors: contains NaN or inf")
    act = _to_numpy(actions, "actions")
    if act.shape != err.shape:
        raise ValueError(f"actions: expected shape {err.shape} like errors, got {act.shape}")
    if (act != np.round(act)).any():
        raise ValueError("actions: expected integer action indices")
    act = act.astype(np.int64)
    names = list(names)
    if act.min() < 0 or act.max() >= len(names):
        raise ValueError(f"actions: indices must lie in [0, {len(names)}) (len(names)), got "
                         f"[{act.min()}, {act.max()}]")
    per_action: dict[str, float] = {}
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        sel = act == i
        n = int(sel.sum())
        if n:
            if name in per_action:
                raise ValueError(f"names: duplicate action name {name!r}")
            per_action[name] = float(err[sel].mean())
            counts[name] = n
    return {
        "per_action": per_action,
        "counts": counts,
        "frame_weighted": float(err.mean()),
        "action_wise": float(np.mean(list(per_action.values()))),
        "num_frames": int(err.size),
        "num_actions": len(per_action),
    }


def _canonical(name: str) -> int | None:
    key = name.replace(" ", "").replace("_", "").lower()
    for i, aliases in enumerate(H36M_TABLE_ORDER):
        if key in (a.lower() for a in aliases):
            return i
    return None


def format_action_table(tables: Mapping, digits: int = 1) -> str:
    """Markdown table of one or several ``action_table`` results (rows) over actions (columns).

    tables: either one ``action_table`` dict (row label "error") or ``{row_label: table}``.
    Columns: actions in the standard H36M order where the names are H36M actions (aliases such as
    TakingPhoto/Photo accepted), any other names after them in their given order; then
    "Avg (action-wise)", "Avg (frame-weighted)" and "Frames". Missing cells are "–".
    """
    if not isinstance(tables, Mapping) or not tables:
        raise ValueError("tables: expected an action_table dict or a non-empty {label: table} dict")
    rows = {"error": tables} if "per_action" in tables else dict(tables)
    for label, tab in rows.items():
        if not isinstance(tab, Mapping) or "per_action" not in tab:
            raise ValueError(f"tables: entry {label!r} is not an action_table result")
    columns: list[str] = []
    for tab in rows.values():
        for name in tab["per_action"]:
            if name not in columns:
                columns.append(name)
    known = sorted((c for c in columns if _canonical(c) is not None), key=_canonical)
    others = [c for c in columns if _canonical(c) is None]
    columns = known + others

    def fmt(v) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    header = ["", *columns, "Avg (action-wise)", "Avg (frame-weighted)", "Frames"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for label, tab in rows.items():
        cells = [str(label)] + [fmt(tab["per_action"].get(c)) for c in columns]
        cells += [fmt(tab["action_wise"]), fmt(tab["frame_weighted"]), str(tab.get("num_frames", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- lifting (any scale, depth sign ambiguous) ---------------------------------------------
def n_mpjpe(pred, gt) -> np.ndarray:
    """MPJPE after root alignment and per-frame optimal scale of ``pred`` (N-MPJPE), ``(N,)`` float64."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    p = p - p[:, :1]
    g = g - g[:, :1]
    s = (p * g).sum((1, 2)) / np.maximum((p * p).sum((1, 2)), 1e-12)
    return np.linalg.norm(s[:, None, None] * p - g, axis=-1).mean(-1)


def evaluate_predictions(pred, gt, actions=None, action_names=None, sign_agnostic: bool = True) -> dict:
    """Metrics of predicted 3D ``(N, 17, 3)`` (any scale) against ground truth ``(N, 17, 3)`` mm.

    Returns ``{"n_mpjpe", "pa_mpjpe"}`` means (mm; ``n_mpjpe`` = MPJPE after root alignment and scale
    normalisation) and, when ``sign_agnostic``, ``"sign_agnostic": {"flipped": bool, "n_mpjpe",
    "pa_mpjpe"}`` — the better of ẑ and −ẑ chosen **once for the whole set** by P-MPJPE (Kudo's
    "allow inversion"). With ``actions`` (N,) int and ``action_names``, per-action tables
    (``pose.metrics.action_table``) under ``"per_action"``.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred: shape {pred.shape} does not match gt {gt.shape} (expected (N, J, 3))")
    pa = pa_mpjpe(pred, gt)
    nm = n_mpjpe(pred, gt)
    res: dict = {"n_mpjpe": float(nm.mean()), "pa_mpjpe": float(pa.mean()), "count": int(len(pred))}
    per = {"n_mpjpe": nm, "pa_mpjpe": pa}
    if sign_agnostic:
        flipped = pred * np.array([1.0, 1.0, -1.0])
        pa_f = pa_mpjpe(flipped, gt)
        use_flip = bool(pa_f.mean() < pa.mean())
        nm_f = n_mpjpe(flipped, gt) if use_flip else nm
        res["sign_agnostic"] = {"flipped": use_flip, "n_mpjpe": float(nm_f.mean()),
                                "pa_mpjpe": float((pa_f if use_flip else pa).mean())}
        per["sign_agnostic_pa_mpjpe"] = pa_f if use_flip else pa
    if actions is not None and action_names is not None:
        res["per_action"] = {k: action_table(v, np.asarray(actions), list(action_names)) for k, v in per.items()}
    return res

