"""How a rendered person and its surroundings look: clothes, body thickness, shading, texture,
background, occluders and the camera's finish (colour response, blur, noise, JPEG).

Three **look families** (``FAMILIES``); a family is chosen per data set, a look is drawn per
sequence or frame from it:

- ``classic`` — the renderer as it was until the appearance randomisation (kept bit for bit: the
  real-pose test split is drawn in it, so its figures stay comparable): independent uniform
  clothes colours, four skin tones, one girth factor U(0.85, 1.2) for every part, the 4-layer
  offset shading (:data:`LAYERED`), smooth-noise or gradient backgrounds with clutter, 3×3 blur
  on half of the frames.
- ``varied`` — training's appearance randomisation: the limbs', torso's and head's thickness drawn
  apart (limbs U(0.72, 1.25), torso U(0.78, 1.25), head U(0.85, 1.15) of the model's radii); four
  shading models (layered, flat, soft 8-layer, rim-lit) with a light from any direction;
  stripes on shirt/trousers on 35 % of looks; clothes colours from HSV with any saturation, skin
  from a continuous range of natural tones; backgrounds of six families (smooth colour noise,
  linear gradient, power-law noise with exponent 0.5–2.5, white noise, stripes/lines, and any of
  them with clutter); on 30 % of frames one or two occluders (boxes, bars, ellipses) drawn in front
  of the body over a random joint; a finish of colour gains, contrast, gamma, Gaussian blur
  σ ≤ 1.5 px, sensor noise σ ≤ 10 and JPEG quality 30–95, each with its own probability.
- ``heldout`` — a family training never draws, for the held-out-looks test split: body thickness
  outside the ``varied`` ranges (limbs 0.55–0.68 or 1.32–1.5, torso 0.62–0.74 or 1.32–1.5, head
  0.72–0.82 or 1.18–1.3), **cel shading with dark outlines** (two tones and an outline ring),
  **dotted** clothes, a **mannequin palette** (grey skin, every clothes part a shade of one hue),
  **room** backgrounds (a perspective checkerboard floor under a planked wall) or **bokeh** (large
  blurred discs), and a fixed-strength finish: Gaussian blur σ 0.8–1.4 px, noise σ 4–8 and JPEG
  quality 35–60.

Everything is drawn from the generator passed in, so a look is a pure function of its seed.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import cv2
import numpy as np

FAMILIES = ("classic", "varied", "heldout")
CROP = 224
#: parts (colour slots of ``Look.shades``)
SKIN, SHIRT, TROUSERS, SHOES, HAIR, PATCH = range(6)
#: shading layers (radius ×, offset towards the light × radius, brightness ×), outermost first
LAYERED = np.array([(1.0, 0.0, 0.55), (0.78, 0.18, 0.8), (0.5, 0.3, 1.0), (0.22, 0.42, 1.18)])
FLAT = np.array([(1.0, 0.0, 0.9)])
SOFT = np.stack([np.linspace(1.0, 0.15, 8), np.linspace(0.0, 0.45, 8), np.linspace(0.5, 1.25, 8)], axis=1)
RIM = np.array([(1.0, 0.0, 1.25), (0.85, -0.1, 0.75), (0.55, -0.2, 0.6)])
CEL = np.array([(1.12, 0.0, 0.08), (1.0, 0.0, 0.62), (0.62, 0.22, 1.08)])
SHADINGS = {"layered": LAYERED, "flat": FLAT, "soft": SOFT, "rim": RIM}


def _check(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"look family: must be one of {FAMILIES}, got {family!r}")


@dataclass(frozen=True)
class Look:
    """Appearance of one rendered person.

    shades: per part (6) one BGR colour per shading layer; girth: limb thickness factor (the
    ``classic`` family: every part's); light: direction in the image (2,) unit vector; layers
    (L, 3): the shading model (radius ×, offset ×, brightness ×), default :data:`LAYERED`; torso /
    head: their thickness factors (None: ``girth``, and the classic head rule); texture: None or
    (kind "stripes" | "dots", BGR colour) drawn on shirt and trousers.
    """

    shades: tuple[tuple[tuple[float, float, float], ...], ...]
    girth: float
    light: np.ndarray
    layers: np.ndarray = field(default_factory=lambda: LAYERED)
    torso: float | None = None
    head: float | None = None
    texture: tuple[str, tuple[float, float, float]] | None = None


def _shades(colours: np.ndarray, layers: np.ndarray) -> tuple:
    return tuple(tuple(tuple(float(v) for v in np.clip(c * k, 0, 255)) for k in layers[:, 2]) for c in colours)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """BGR 0–255 of hue/saturation/value in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return np.array([b, g, r]) * 255.0


def _light(rng: np.random.Generator) -> np.ndarray:
    ang = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(ang), np.sin(ang)])


def _either(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]) -> float:
    return float(rng.uniform(*(low if rng.random() < 0.5 else high)))


def random_look(rng: np.random.Generator, family: str = "classic") -> Look:
    """One look of ``family`` (module docstring)."""
    _check(family)
    if family == "classic":
        skin = np.array([[60, 90, 150], [90, 130, 190], [120, 160, 215], [40, 60, 100]], float)[rng.integers(4)]
        skin = skin * rng.uniform(0.85, 1.15)
        shirt, trousers, shoes, patch = (rng.uniform(20, 235, 3) for _ in range(4))
        trousers = trousers * rng.uniform(0.4, 1.0)
        hair = skin * rng.uniform(0.2, 0.7)
        colours = np.stack([skin, shirt, trousers, shoes * 0.6, hair, patch])
        shades = _shades(colours, LAYERED)
        ang = rng.uniform(0, 2 * np.pi)
        return Look(shades, float(rng.uniform(0.85, 1.2)), np.array([np.cos(ang), np.sin(ang)]))
    if family == "varied":
        skin = _hsv(rng.uniform(0.02, 0.11), rng.uniform(0.25, 0.7), rng.uniform(0.25, 0.95))
        shirt, trousers, shoes, patch = (_hsv(rng.random(), rng.random(), rng.uniform(0.1, 0.95)) for _ in range(4))
        hair = _hsv(rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.6))
        layers = list(SHADINGS.values())[int(rng.integers(len(SHADINGS)))]
        texture = None
        if rng.random() < 0.35:
            texture = ("stripes", tuple(float(v) for v in _hsv(rng.random(), rng.random(), rng.uniform(0.1, 0.95))))
        colours = np.stack([skin, shirt, trousers, shoes, hair, patch])
        return Look(_shades(colours, layers), float(rng.uniform(0.72, 1.25)), _light(rng), layers,
                    torso=float(rng.uniform(0.78, 1.25)), head=float(rng.uniform(0.85, 1.15)), texture=texture)
    # heldout: mannequin palette, cel shading, dots
    hue = rng.random()
    grey = rng.uniform(0.35, 0.85) * 255.0
    skin = np.full(3, grey)
    shirt, trousers, shoes, patch = (_hsv(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.95))
                                     for _ in range(4))
    hair = skin * 0.5
    dots = tuple(float(v) for v in _hsv(hue + 0.5, rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0)))
    colours = np.stack([skin, shirt, trousers, shoes, hair, patch])
    return Look(_shades(colours, CEL), _either(rng, (0.55, 0.68), (1.32, 1.5)), _light(rng), CEL,
                torso=_either(rng, (0.62, 0.74), (1.32, 1.5)), head=_either(rng, (0.72, 0.82), (1.18, 1.3)),
                texture=("dots", dots))


# ---------------------------------------------------------------------------------------------
# backgrounds
# ---------------------------------------------------------------------------------------------
_GRAIN = np.random.default_rng(20240601).integers(0, 11, (CROP * 2, CROP * 2, 3), dtype=np.uint8)


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    g = int(rng.integers(3, 9))
    return cv2.resize(rng.integers(0, 256, (g, g, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    cx, cy = np.cos(ang), np.sin(ang)
    t = 0.5 + 0.5 * np.array([[-cx - cy, cx - cy], [-cx + cy, cx + cy]]) / np.sqrt(2)
    small = (a * (1 - t[..., None]) + b * t[..., None]).astype(np.uint8)
    # bilinear upsampling of 2×2 is linear between the two source pixel centres: keep that middle part
    img = cv2.resize(small, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img[size // 2:size // 2 + size, size // 2:size // 2 + size])


def _power_noise(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """Colour noise with a 1/f^exponent amplitude spectrum, stretched to a random colour range."""
    n = 64
    f = np.sqrt(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.rfftfreq(n)[None, :] ** 2)
    f[0, 0] = 1.0
    spec = (rng.standard_normal((3, n, n // 2 + 1)) + 1j * rng.standard_normal((3, n, n // 2 + 1))) / f ** exponent
    x = np.fft.irfft2(spec, s=(n, n)).transpose(1, 2, 0)
    x = (x - x.min()) / max(float(np.ptp(x)), 1e-9)
    lo, hi = rng.uniform(0, 120), rng.uniform(135, 255)
    return cv2.resize((lo + (hi - lo) * x).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Parallel lines of one colour on a flat ground, at a random angle and period."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.uniform(0, 255, 3)
    ang = rng.uniform(0, np.pi)
    d, e = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
    period = rng.uniform(8, 40)
    col = rng.uniform(0, 255, 3).tolist()
    width = int(rng.integers(1, 6))
    for k in range(-int(size / period) - 1, int(size / period) + 2):
        c = size / 2 + d * k * period
        cv2.line(img, (c - 2 * size * e).astype(int).tolist(), (c + 2 * size * e).astype(int).tolist(), col, width,
                 cv2.LINE_AA)
    return img


def clutter(img: np.ndarray, rng: np.random.Generator, count: tuple[int, int] = (3, 12)) -> None:
    """Draw rectangles, ellipses and lines of random colours over ``img`` in place."""
    size = img.shape[0]
    for _ in range(int(rng.integers(*count))):
        col = rng.uniform(0, 255, 3).tolist()
        p = (rng.uniform(-0.2, 1.2, 4) * size).astype(int).tolist()
        shape = int(rng.integers(3))
        if shape == 0:
            cv2.rectangle(img, (p[0], p[1]), (p[2], p[3]), col, -1)
        elif shape == 1:
            axes = (abs(p[2] - p[0]) // 3 + 2, abs(p[3] - p[1]) // 3 + 2)
            cv2.ellipse(img, (p[0], p[1]), axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
        else:
            cv2.line(img, (p[0], p[1]), (p[2], p[3]), col, int(rng.integers(1, 8)), cv2.LINE_AA)


def _room(rng: np.random.Generator, size: int) -> np.ndarray:
    """A planked wall above a perspective checkerboard floor (held-out family)."""
    img = np.empty((size, size, 3), np.uint8)
    horizon = int(rng.uniform(0.35, 0.75) * size)
    wall = rng.uniform(40, 230, 3)
    img[:horizon] = wall
    plank = rng.uniform(12, 36)
    for x in np.arange(rng.uniform(0, plank), size, plank):
        cv2.line(img, (int(x), 0), (int(x), horizon), (wall * 0.6).tolist(), 1, cv2.LINE_AA)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ys, xs = np.mgrid[horizon:size, 0:size].astype(np.float64)
    depth = 40.0 / (ys - horizon + 4.0)  # floor distance ∝ 1 / rows below the horizon
    u = (xs - size / 2) * depth / 6.0 + rng.uniform(0, 2)
    v = depth * 6.0 + rng.uniform(0, 2)
    check = (np.floor(u) + np.floor(v)) % 2
    img[horizon:] = np.where(check[..., None] > 0, a, b).astype(np.uint8)
    return img


def _bokeh(rng: np.random.Generator, size: int) -> np.ndarray:
    """Large soft discs on a dark-to-mid ground, blurred (held-out family)."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.uniform(10, 120, 3)
    for _ in range(int(rng.integers(8, 20))):
        c = (rng.uniform(-0.1, 1.1, 2) * size).astype(int).tolist()
        cv2.circle(img, c, int(rng.uniform(0.05, 0.2) * size), rng.uniform(60, 255, 3).tolist(), -1, cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(3.0, 7.0))


def background(rng: np.random.Generator, family: str = "classic", size: int = CROP) -> np.ndarray:
    """Random background (size, size, 3) uint8 BGR of ``family`` (module docstring), with fine grain
    (a fixed texture at a random offset)."""
    _check(family)
    if family == "heldout":
        img = _room(rng, size) if rng.random() < 0.5 else _bokeh(rng, size)
    else:
        kinds = 3 if family == "classic" else 6
        kind = int(rng.integers(kinds))
        if kind == 0:
            img = _smooth_noise(rng, size)
        elif kind in (1, 2):
            img = _gradient(rng, size)
        elif kind == 3:
            img = _power_noise(rng, size, rng.uniform(0.5, 2.5))
        elif kind == 4:
            img = cv2.resize(rng.integers(0, 256, (size // 2, size // 2, 3), dtype=np.uint8), (size, size),
                             interpolation=cv2.INTER_NEAREST)
        else:
            img = _stripes(rng, size)
        if kind == 2 or rng.random() < 0.5:
            clutter(img, rng)
    oy, ox = rng.integers(0, size, 2)
    grain = _GRAIN[oy:oy + size, ox:ox + size]
    if grain.shape[:2] != (size, size):
        grain = cv2.resize(_GRAIN, (size, size), interpolation=cv2.INTER_NEAREST)
    return cv2.subtract(cv2.add(img, grain), 5)


# ---------------------------------------------------------------------------------------------
# in front of the body, and the camera's finish
# ---------------------------------------------------------------------------------------------
def occlude(img: np.ndarray, rng: np.random.Generator, uv: np.ndarray, prob: float = 0.3) -> None:
    """With probability ``prob``, one or two occluders (box, bar or ellipse, 12–35 % of the crop,
    random colour) drawn in place over random joints ``uv`` (J, 2) crop px."""
    if rng.random() >= prob:
        return
    size = img.shape[0]
    for _ in range(int(rng.integers(1, 3))):
        c = uv[int(rng.integers(len(uv)))] + rng.normal(0.0, 0.04 * size, 2)
        w, h = rng.uniform(0.12, 0.35, 2) * size
        col = rng.uniform(0, 255, 3).tolist()
        shape = int(rng.integers(3))
        if shape == 0:
            p1, p2 = (c - [w / 2, h / 2]).astype(int).tolist(), (c + [w / 2, h / 2]).astype(int).tolist()
            cv2.rectangle(img, p1, p2, col, -1)
        elif shape == 1:
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * w
            cv2.line(img, (c - d).astype(int).tolist(), (c + d).astype(int).tolist(), col,
                     max(int(0.25 * h), 3), cv2.LINE_AA)
        else:
            cv2.ellipse(img, c.astype(int).tolist(), (int(w / 2), int(h / 2)), float(rng.uniform(0, 180)), 0, 360,
                        col, -1, cv2.LINE_AA)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _noise(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    n = rng.normal(0.0, sigma, img.shape)
    return np.clip(img.astype(np.float64) + n, 0, 255).astype(np.uint8)


def finish(img: np.ndarray, rng: np.random.Generator, family: str = "classic") -> np.ndarray:
    """The camera's finish of ``family`` applied to a rendered crop (module docstring) → new uint8 image."""
    _check(family)
    if family == "classic":
        return cv2.GaussianBlur(img, (3, 3), 0) if rng.random() < 0.5 else img
    if family == "heldout":
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 1.4))
        return _jpeg(_noise(img, rng, rng.uniform(4.0, 8.0)), int(rng.integers(35, 61)))
    if rng.random() < 0.7:  # colour response: gains, contrast about the mean, gamma
        x = img.astype(np.float64) / 255.0 * rng.uniform(0.8, 1.2, 3)
        x = (x - x.mean()) * rng.uniform(0.6, 1.3) + x.mean()
        x = np.clip(x, 0.0, 1.0) ** rng.uniform(0.6, 1.6)
        img = (x * 255.0 + 0.5).astype(np.uint8)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))
    if rng.random() < 0.4:
        img = _noise(img, rng, rng.uniform(2.0, 10.0))
    if rng.random() < 0.4:
        img = _jpeg(img, int(rng.integers(30, 96)))
    return img
