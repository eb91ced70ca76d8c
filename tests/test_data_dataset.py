"""PackedDataset: geometric consistency with and without augmentation, flips, 2D-only samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose import skeleton
from pose.camera import apply_affine, project
from pose.data import C2F_VOL_DEMO, AugConfig, AugParams, PackedDataset, RawSample, seed_txt
from pose.data import prepare as prep
from pose.data.augment import flip_sample, sample_aug
from pose.data.dataset import decode_image
from pose.data.packed import PackWriter

VALID = C2F_VOL_DEMO / "valid.npz"
KEYS = {"image", "joints_2d", "z_rel", "joints_3d", "visible", "has_depth", "K", "crop_to_raw", "root_depth",
        "action", "subject", "index"}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A synthetic seed layout made from real S9 poses (projected with their real K), packed."""
    base = tmp_path_factory.mktemp("ds")
    d = np.load(VALID)
    sel = np.arange(0, 394, 33)[:12]  # varied poses
    subjects = np.array([1] * 6 + [5] * 6)
    actions = np.array(["Posing", "Greeting"] * 6)
    seed_txt.write_layout_from_poses(base / "src", d["S"][sel], d["K"][sel], subjects, actions)
    prep.prepare(base / "src", base / "packed", split="train", progress=False)
    return base / "packed" / "train"


def reprojection_error(s) -> float:
    """max |project(joints_3d, K) − crop_to_raw(joints_2d)| in raw px."""
    raw = apply_affine(s["joints_2d"].double(), s["crop_to_raw"].double())
    return float((project(s["joints_3d"].double(), s["K"].double()) - raw).abs().max())


def test_sample_dict_and_consistency(packed):
    ds = PackedDataset(packed, input_size=256)
    assert len(ds) == 12 and ds.action_names[skeleton.ACTIONS_H36M.index("Posing")] == "Posing"
    for i in range(len(ds)):
        s = ds[i]
        assert KEYS <= set(s)
        assert s["image"].shape == (3, 256, 256) and s["image"].dtype == torch.float32
        assert -0.5 <= float(s["image"].min()) and float(s["image"].max()) <= 0.5
        assert s["joints_2d"].shape == (17, 2) and s["joints_3d"].shape == (17, 3) and s["K"].shape == (3, 3)
        assert s["crop_to_raw"].shape == (2, 3) and s["has_depth"].item() and s["visible"].all()
        assert reprojection_error(s) < 0.01
        assert s["z_rel"][0] == 0 and torch.allclose(s["z_rel"], s["joints_3d"][:, 2] - s["joints_3d"][0, 2])
        assert s["root_depth"] == s["joints_3d"][0, 2]
        # the 224 crop sits at 200 px inside the 256 input (enlarge 1.28): joints in the middle part
        assert float(s["joints_2d"].min()) > 27 and float(s["joints_2d"].max()) < 228
    assert ds[3]["subject"].item() == 1 and ds[3]["index"].item() == 3


@pytest.mark.parametrize("params", [
    AugParams(flip=True), AugParams(rot=35.0), AugParams(rot=-60.0, scale=0.75), AugParams(scale=1.25),
    AugParams(scale=0.8, rot=25.0, flip=True, color=(0.8, 1.2, 1.0)),
])
def test_consistency_after_augmentation(packed, params):
    ds = PackedDataset(packed, input_size=128, train=True)
    base = ds.get(4, AugParams())
    s = ds.get(4, params)
    assert reprojection_error(s) < 0.01
    # z_rel is metric (never rescaled); a flip only swaps left and right
    perm = list(skeleton.FLIP_PERM_17) if params.flip else list(range(17))
    torch.testing.assert_close(s["z_rel"], base["z_rel"][perm])
    torch.testing.assert_close(s["joints_3d"], base["joints_3d"][perm])
    # bone lengths in the crop scale by 1/scale (rotation and flip preserve them)
    bl = skeleton.limb_lengths(torch.cat([s["joints_2d"], torch.zeros(17, 1)], 1))
    bl0 = skeleton.limb_lengths(torch.cat([base["joints_2d"], torch.zeros(17, 1)], 1))
    torch.testing.assert_close(bl.sort().values, (bl0 / params.scale).sort().values, rtol=1e-4, atol=1e-3)


def test_random_augmentation_always_consistent(packed):
    ds = PackedDataset(packed, input_size=64, train=True, seed=7)
    for i in range(24):
        assert reprojection_error(ds[i % len(ds)]) < 0.01
    a = PackedDataset(packed, input_size=64, train=True, seed=7)
    torch.testing.assert_close(a[0]["joints_2d"], PackedDataset(packed, input_size=64, train=True, seed=7)[0]["joints_2d"])
    off = PackedDataset(packed, input_size=64, train=True, aug=AugConfig(enabled=False))
    torch.testing.assert_close(off[2]["joints_2d"], PackedDataset(packed, input_size=64)[2]["joints_2d"])


def test_flipped_image_is_mirror(packed):
    ds = PackedDataset(packed, input_size=96)
    a, b = ds.get(1, AugParams()), ds.get(1, AugParams(flip=True))
    assert (a["image"] - b["image"].flip(-1)).abs().max() < 2.5 / 255
    mirrored = a["joints_2d"].clone()
    mirrored[:, 0] = 95 - mirrored[:, 0]
    torch.testing.assert_close(b["joints_2d"], mirrored[list(skeleton.FLIP_PERM_17)], atol=1e-3, rtol=0)


def test_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    j2, j3, vis = rng.normal(size=(17, 2)) * 10, rng.normal(size=(17, 3)), rng.random(17) > 0.5
    once = flip_sample(img, j2, j3, vis)
    twice = flip_sample(*once)
    assert not np.array_equal(once[0], img)
    np.testing.assert_array_equal(twice[0], img)
    np.testing.assert_allclose(twice[1], j2)
    np.testing.assert_array_equal(twice[2], j3)
    np.testing.assert_array_equal(twice[3], vis)
    assert sorted(skeleton.FLIP_PERM_17) == list(range(17))


def test_aug_ranges():
    cfg = AugConfig()
    rng = np.random.default_rng(1)
    draws = [sample_aug(cfg, rng) for _ in range(2000)]
    scales = np.array([d.scale for d in draws])
    rots = np.array([d.rot for d in draws])
    assert scales.min() >= 0.75 and scales.max() <= 1.25
    assert np.abs(rots).max() <= 60 and 0.3 < (rots != 0).mean() < 0.5
    assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
    gains = np.array([d.color for d in draws])
    assert gains.min() >= 0.8 and gains.max() <= 1.2
    with pytest.raises(ValueError, match="flip_prob"):
        AugConfig(flip_prob=1.5)


def test_visible_flag_outside_crop(packed):
    ds = PackedDataset(packed, input_size=64, bbox_enlarge=0.4)  # zoom far in: limbs leave the crop
    s = ds.get(0, AugParams())
    j = s["joints_2d"]
    inside = (j >= -0.5).all(1) & (j <= 63.5).all(1)
    assert not inside.all()
    assert torch.equal(s["visible"], inside)


def test_two_d_only_samples(tmp_path):
    """A 2D-only sample (has_depth False, e.g. MPII) packs and loads with zero depth labels."""
    import cv2

    img = np.full((100, 120, 3), 90, np.uint8)
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), img)
    j2 = np.random.default_rng(0).uniform(30, 70, (17, 2))
    s = RawSample(index=0, image_path=str(path), image_size=(120, 100), joints_2d=j2, joints_3d=np.zeros((17, 3)),
                  K=np.eye(3), R=np.eye(3), T=np.zeros(3), dist=np.zeros(5), bbox=np.array([20, 20, 80, 80.0]),
                  img_to_raw=np.array([[1.0, 0, 0], [0, 1, 0]]), subject=0, action=0, action_name="mpii",
                  has_depth=False)
    s.validate()
    w = PackWriter(tmp_path / "split")
    w.add(s, path.read_bytes())
    w.finish({"layout": "json", "action_names": ["mpii"]})
    ds = PackedDataset(tmp_path / "split", input_size=64, train=True, seed=0)
    out = ds[0]
    assert not out["has_depth"].item() and out["z_rel"].abs().sum() == 0 and out["joints_3d"].abs().sum() == 0
    assert out["root_depth"] == 0
    raw = apply_affine(out["joints_2d"].double(), out["crop_to_raw"].double())
    perm = list(skeleton.FLIP_PERM_17)
    assert torch.allclose(raw, torch.from_numpy(j2), atol=1e-3) or torch.allclose(raw, torch.from_numpy(j2[perm]), atol=1e-3)


def test_image_cache_gives_the_same_samples_within_its_budget(packed):

    plain = PackedDataset(packed, input_size=64)
    one_image = plain.images[0]
    nbytes = decode_image(one_image).nbytes
    cached = PackedDataset(packed, input_size=64, cache_mb=2.5 * nbytes / 2**20)  # room for two images
    p = AugParams(scale=1.1, rot=15.0, flip=True, color=(0.9, 1.0, 1.1))
    for _ in range(2):
        for i in range(len(plain)):
            a, b = plain.get(i, p), cached.get(i, p)
            assert all(torch.equal(a[k], b[k]) for k in a), i
    assert sorted(cached._cache) == [0, 1] and not cached._cache[0].flags.writeable
    with pytest.raises(ValueError, match="cache_mb"):
        PackedDataset(packed, input_size=64, cache_mb=-1)


def test_dataloader_workers(packed):
    ds = PackedDataset(packed, input_size=64, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    batches = list(loader)
    assert len(batches) == 3
    b = batches[0]
    assert b["image"].shape == (4, 3, 64, 64) and b["joints_2d"].shape == (4, 17, 2) and b["has_depth"].shape == (4,)
    assert sorted(torch.cat([x["index"] for x in batches]).tolist()) == list(range(12))


@pytest.mark.parametrize("size,rot", [(420.0, 17.0), (150.0, -30.0), (60.0, 0.0)])
def test_warp_crop_geometry_and_antialiasing(size, rot):
    """warp_crop = cv2.warpAffine geometry (a blob lands at apply_affine of its centre), and a
    shrinking crop of a 1-px stripe pattern averages it (no aliasing) instead of sampling it."""
    import cv2

    from pose.camera import crop_affine
    from pose.data.dataset import warp_crop

    yy, xx = np.mgrid[0:1000, 0:1000]
    c = np.array([487.3, 512.6])
    blob = (250 * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * (size / 20) ** 2))).astype(np.uint8)
    M = crop_affine(np.array([480.0, 505.0]), size, rot, 64)
    out = warp_crop(np.dstack([blob] * 3), M, 64)[..., 0].astype(float)
    ref = cv2.warpAffine(np.dstack([blob] * 3), M, (64, 64), flags=cv2.INTER_LINEAR)[..., 0].astype(float)
    gy, gx = np.mgrid[0:64, 0:64]
    centroid = np.array([(out * gx).sum(), (out * gy).sum()]) / out.sum()
    expected = apply_affine(c[None], M)[0]
    assert np.abs(centroid - expected).max() < 0.15
    assert np.abs(out - ref).max() <= (2 if size < 128 else 40)  # identical path when not shrinking 2x
    stripes = np.dstack([((xx // 1) % 2 * 255).astype(np.uint8)] * 3)
    flat = warp_crop(stripes, crop_affine(np.array([500.0, 500.0]), 400.0, 0.0, 64), 64)[..., 0]
    assert abs(float(flat.mean()) - 127.5) < 3 and float(flat.std()) < 8  # averaged to grey, no moire


@pytest.mark.parametrize("M", [np.zeros((2, 3)), np.array([[np.nan, 0, 0], [0, 1, 0]]), np.eye(3)])
def test_warp_crop_rejects_a_degenerate_affine(M):
    from pose.data.dataset import warp_crop

    img = np.full((32, 32, 3), 50, np.uint8)
    with pytest.raises(ValueError, match="M: expected a finite, invertible"):
        warp_crop(img, M, 16)
