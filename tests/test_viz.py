"""pose.viz: skeleton drawing, 3D views, heatmap grid, plots (values, sizes, colours)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pose import viz
from pose.skeleton import LEFT_17, RIGHT_17

# a standing person facing the camera (camera mm, Y down): the person's right side at −X
POSE = np.array([
    [0, 0, 0], [-130, 0, 0], [-130, 450, 30], [-130, 890, 0], [130, 0, 0], [130, 450, 30], [130, 890, 0],
    [0, -230, 0], [0, -480, 0], [0, -560, -60], [0, -700, 0], [150, -480, 0], [400, -480, 0],
    [620, -480, -100], [-150, -480, 0], [-300, -280, 0], [-300, -30, -50]], dtype=np.float64)


def _project(P, f=500.0, c=(160.0, 120.0), z=4000.0):
    Q = P + [0, 0, z]
    return np.stack([f * Q[:, 0] / Q[:, 2] + c[0], f * Q[:, 1] / Q[:, 2] + c[1]], axis=1)


def test_side_colours():
    for j in LEFT_17:
        assert viz.joint_color(j) == viz.LEFT_COLOR
    for j in RIGHT_17:
        assert viz.joint_color(j) == viz.RIGHT_COLOR
    assert viz.joint_color(0) == viz.CENTER_COLOR
    assert viz.bone_color(0, 1) == viz.RIGHT_COLOR and viz.bone_color(8, 11) == viz.LEFT_COLOR


def test_draw_skeleton_2d_colours_at_joints():
    img = np.zeros((240, 320, 3), np.uint8)
    uv = _project(POSE)
    out = viz.draw_skeleton_2d(img, uv, radius=4)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not out.any(axis=2)[0, 0] and img.sum() == 0  # input untouched
    # the centre of the left wrist / right ankle markers carries the side colour
    lw = np.round(uv[13]).astype(int)
    ra = np.round(uv[3]).astype(int)
    assert tuple(out[lw[1], lw[0]]) == viz.LEFT_COLOR
    assert tuple(out[ra[1], ra[0]]) == viz.RIGHT_COLOR
    # the person's left (blue) is on the right-hand side of the picture for a person facing the camera
    assert uv[13, 0] > uv[16, 0]


def test_draw_skeleton_2d_bad_input():
    with pytest.raises(ValueError, match="joints_2d"):
        viz.draw_skeleton_2d(np.zeros((10, 10, 3), np.uint8), np.zeros((16, 2)))
    with pytest.raises(ValueError, match="image"):
        viz.draw_skeleton_2d(np.zeros((10, 10, 5)), np.zeros((17, 2)))


def test_draw_skeleton_2d_skips_nan():
    uv = _project(POSE)
    uv[5] = np.nan
    out = viz.draw_skeleton_2d(np.zeros((240, 320, 3), np.uint8), uv)
    assert out.any()


def test_view_rotation():
    np.testing.assert_allclose(viz.view_rotation(0, 0), np.eye(3), atol=1e-12)
    R = viz.view_rotation(90, 0)
    # azimuth 90: x' = z (chen convention x cos t + z sin t), z' = -x
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


def test_render_3d_views_shape_and_azimuth_zero_matches_image_layout():
    views = viz.render_3d_views(POSE, azimuths=(0, 15, 165), size=200, elevation=0.0)
    assert views.shape == (200, 600, 3) and views.dtype == np.uint8
    # at azimuth 0 the left wrist (blue) is right of the right wrist (red), as in the image;
    # at 165 deg (seen from behind) the sides swap
    def mean_x(panel, colour):
        m = np.all(panel == np.array(colour, np.uint8), axis=2)
        return np.nonzero(m)[1].mean()

    p0, p165 = views[:, :200], views[:, 400:]
    assert mean_x(p0, viz.LEFT_COLOR) > mean_x(p0, viz.RIGHT_COLOR)
    assert mean_x(p165, viz.LEFT_COLOR) < mean_x(p165, viz.RIGHT_COLOR)


def test_render_3d_views_overlay():
    poses = [viz.Pose3D(POSE, color=viz.GT_COLOR, linestyle="--"), viz.Pose3D(POSE + 20)]
    a = viz.render_3d_views(poses, azimuths=(0, 90), size=120)
    assert a.shape == (120, 240, 3)
    gt = np.all(a == viz.GT_COLOR, axis=-1).sum()
    assert gt > 20  # the dashed ground truth is drawn in its own colour
    with pytest.raises(ValueError, match="azimuths"):
        viz.render_3d_views(POSE, azimuths=())


def test_pose_panel_size():
    img = np.full((240, 320, 3), 90, np.uint8)
    out = viz.pose_panel(img, _project(POSE), POSE, height=200, title="t", bbox=(10, 10, 300, 230))
    assert out.shape[:2] == viz.pose_panel_size((240, 320), 3, 200) == (200, 267 + 600)
    only2d = viz.pose_panel(img, _project(POSE), None, height=120)
    assert only2d.shape == (120, 160, 3)


def test_heatmap_grid_shape_and_marks():
    rng = np.random.default_rng(0)
    crop = np.full((64, 64, 3), 128, np.uint8)
    hm = rng.random((17, 16, 16)).astype(np.float32)
    vol = rng.random((17, 4, 16, 16)).astype(np.float32)
    g = viz.heatmap_grid(crop, hm, vol, joints_crop=rng.random((17, 2)) * 64,
                         depth_centers_mm=np.linspace(-750, 750, 4), tile=100, title="x")
    assert g.shape == (24 + 3 * 125, 600, 3)
    g2 = viz.heatmap_grid(crop, hm, None, tile=50)
    assert g2.shape == (3 * 50, 300, 3)
    with pytest.raises(ValueError, match="volume"):
        viz.heatmap_grid(crop, hm, vol[:5])
    with pytest.raises(ValueError, match="hm2d"):
        viz.heatmap_grid(crop, hm[0], None)


def test_plot_curves_writes_png(tmp_path):
    a = viz.plot_curves({"val": ([1, 2, 3], [3.0, 2.0, 1.5]), "train": ([1, 2, 3], [2.0, 1.0, 0.5])},
                        path=tmp_path / "c.png", logy=True)
    disk = cv2.imread(str(tmp_path / "c.png"))
    assert disk is not None and disk.shape == a.shape
    with pytest.raises(ValueError, match="curves"):
        viz.plot_curves({"x": ([1, 2], [1.0])})


def test_read_save_roundtrip(tmp_path):
    img = (np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)
    viz.save_png(tmp_path / "sub" / "a.png", img)
    np.testing.assert_array_equal(viz.read_image(tmp_path / "sub" / "a.png"), img)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.png"):
        viz.read_image(tmp_path / "bad.png")
