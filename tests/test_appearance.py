"""Look families of the renderer (pose.data.synth.appearance): the held-out family is one training
never draws, every family draws the body where its joints are, and draws are pure functions of the seed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pose.data.synth import appearance, motion, render
from pose.data.synth.appearance import CEL, FAMILIES, SHADINGS, SKIN, finish, random_look


def _looks(family: str, n: int = 1500) -> list[appearance.Look]:
    return [random_look(np.random.default_rng([7, i]), family) for i in range(n)]


def test_heldout_looks_are_never_drawn_by_training():
    """Thickness, shading, texture and palette of the held-out family lie outside what the training
    families draw: no overlap over 1,500 draws each."""
    held = _looks("heldout")
    for family in ("classic", "varied"):
        train = _looks(family)
        assert not any(lk.layers is CEL or np.array_equal(lk.layers, CEL) for lk in train)
        assert not any(lk.texture is not None and lk.texture[0] == "dots" for lk in train)
        skins = np.array([lk.shades[SKIN][0] for lk in train])
        assert np.ptp(skins, axis=1).min() > 1.0  # a tinted skin, never the mannequin grey
        g = np.array([lk.girth for lk in train])
        held_g = np.array([lk.girth for lk in held])
        assert ((held_g < g.min()) | (held_g > g.max())).all()
    varied = _looks("varied")
    for attr in ("torso", "head"):
        v = np.array([getattr(lk, attr) for lk in varied])
        h = np.array([getattr(lk, attr) for lk in held])
        assert ((h < v.min()) | (h > v.max())).all(), attr
        assert (h < v.min()).any() and (h > v.max()).any(), attr  # thinner and thicker both held out
    assert all(np.array_equal(lk.layers, CEL) and lk.texture[0] == "dots" for lk in held)
    assert all(np.ptp(lk.shades[SKIN][1]) < 1e-6 for lk in held)  # grey skin
    # training's randomisation covers every shading model and both texture states
    used = {next(k for k, v in SHADINGS.items() if np.array_equal(v, lk.layers)) for lk in varied}
    assert used == set(SHADINGS)
    assert 0.25 < np.mean([lk.texture is not None for lk in varied]) < 0.45


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_draws_the_body_where_its_joints_are(family):
    """On a flat grey image the drawn body covers the projected joints (cel outlines, dots and thin
    limbs included) and leaves the corners alone."""
    clip = motion.load_clips()["walk"]
    hits = []
    for i in range(12):
        rng = np.random.default_rng([3, i])
        P = motion.sample_clip(clip, 0.1 * i)
        cam = render.random_camera(rng, np.array([0.0, 0.0, 900.0]), rng.uniform(0, 2 * np.pi))
        P_cam = cam.to_camera(P)
        A = render.raw_to_crop(render.square_box(cam.project(P_cam[:17]), rng))
        img = np.full((224, 224, 3), 128, np.uint8)
        render.draw_body(img, P_cam, A, cam, random_look(rng, family))
        uv = np.round(cam.project(P_cam[:17]) @ A[:, :2].T + A[:, 2]).astype(int).clip(0, 223)
        diff = np.abs(img.astype(int) - 128).sum(-1)
        hits.append((diff[uv[:, 1], uv[:, 0]] > 0).mean())
        assert (diff[[1, 1, 222, 222], [1, 222, 1, 222]] == 0).sum() >= 2
    assert np.mean(hits) > 0.9


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_render_is_a_pure_function_of_its_seed(family):
    clip = motion.load_clips()["kick"]
    P = motion.sample_clip(clip, 0.4)

    def frame(seed):
        rng = np.random.default_rng(seed)
        cam = render.random_camera(rng, np.array([0.0, 0.0, 900.0]), 1.0)
        return render.render_frame(rng, P, cam, random_look(rng, family), family=family)[0]

    a = frame(5)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, frame(5))
    assert np.abs(a.astype(int) - frame(6).astype(int)).mean() > 5


def test_unknown_family_is_one_clear_error():
    for call in (lambda r: random_look(r, "cartoon"), lambda r: appearance.background(r, "cartoon"),
                 lambda r: finish(np.zeros((8, 8, 3), np.uint8), r, "cartoon")):
        with pytest.raises(ValueError, match="look family: must be one of .*got 'cartoon'"):
            call(np.random.default_rng(0))


def test_heldout_finish_blurs_adds_noise_and_compresses():
    """The held-out finish always softens edges (less Laplacian energy on a checkerboard) and changes
    flat areas (sensor noise); the classic one either leaves the image or blurs 3×3."""
    board = (np.indices((224, 224)).sum(0) // 8 % 2 * 255).astype(np.uint8)
    img = np.repeat(board[..., None], 3, axis=2)
    flat = np.full((224, 224, 3), 128, np.uint8)
    for i in range(5):
        out = finish(img, np.random.default_rng(i), "heldout")
        assert cv2.Laplacian(out, cv2.CV_64F).var() < 0.5 * cv2.Laplacian(img, cv2.CV_64F).var()
        assert finish(flat, np.random.default_rng(i), "heldout").std() > 1.0  # noise, softened by the JPEG
        c = finish(img, np.random.default_rng(i), "classic")
        assert np.array_equal(c, img) or np.array_equal(c, cv2.GaussianBlur(img, (3, 3), 0))


def test_occluders_cover_part_of_the_body():
    uv = np.array([[112.0, 112.0]] * 17)
    img = np.zeros((224, 224, 3), np.uint8)
    appearance.occlude(img, np.random.default_rng(0), uv, prob=1.0)
    assert img[100:125, 100:125].any()
    untouched = np.zeros((224, 224, 3), np.uint8)
    appearance.occlude(untouched, np.random.default_rng(0), uv, prob=0.0)
    assert not untouched.any()


def test_training_families_and_the_mixed_draw():
    """``pose synth --appearance``: classic and varied pass through, mixed is half and half (or the
    ``varied_share`` asked for); heldout
    (the test family) and unknown names are refused by name."""
    from pose.data.synth import generate

    assert generate._family("varied", np.random.default_rng(0)) == "varied"
    draws = [generate._family("mixed", np.random.default_rng([1, i])) for i in range(2000)]
    assert set(draws) == {"classic", "varied"} and 0.46 < draws.count("varied") / len(draws) < 0.54
    fifth = [generate._family("mixed", np.random.default_rng([1, i]), 0.2) for i in range(2000)]
    assert 0.17 < fifth.count("varied") / len(fifth) < 0.23  # data.synth_varied_share / --varied-share
    assert generate.plan(generate.SynthConfig(frames=400, appearance="mixed", varied_share=0.2))[0].varied_share == 0.2
    with pytest.raises(ValueError, match="varied_share: must be in"):
        generate.plan(generate.SynthConfig(frames=10, appearance="mixed", varied_share=1.5))
    for bad in ("heldout", "cartoon"):
        with pytest.raises(ValueError, match=f"appearance: must be one of .*got '{bad}'"):
            generate.plan(generate.SynthConfig(frames=10, appearance=bad))
    seqs = generate.plan(generate.SynthConfig(frames=400, appearance="varied"))
    assert {q.appearance for q in seqs if q.train} == {"varied"}
    assert {q.appearance for q in seqs if not q.train} == {"classic"}  # the embedded test split never changes
