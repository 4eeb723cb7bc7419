"""Backdrops for the watches: random crops of real photos shipped in scikit-image / scikit-learn (no downloads),
recoloured and sometimes defocused, now and then a studio gradient; plus non-watch distractor objects."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from pipelines.synthetic.draw import AA, fill, line, shade

_SKIMAGE_BACKGROUNDS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel", "moon", "hubble_deep_field",
    "immunohistochemistry",
)  # fmt: skip
STUDIO_P = 0.1  # share of studio backdrops


@functools.cache
def background_sources() -> tuple[np.ndarray, ...]:
    """Real photos shipped inside scikit-image and scikit-learn (no downloads), as RGB uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = []
    for name in _SKIMAGE_BACKGROUNDS:
        img = np.asarray(getattr(skimage.data, name)())
        images.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    images.extend(np.asarray(img) for img in load_sample_images().images)
    return tuple(np.ascontiguousarray(img, dtype=np.uint8) for img in images)


def background_names() -> tuple[str, ...]:
    """Names of `background_sources`, in order."""
    return (*_SKIMAGE_BACKGROUNDS, "china", "flower")


def make_background(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A random crop of a real photo (flipped, recoloured, sometimes defocused), or now and then a studio backdrop.

    Returns the image and the name of its source.
    """
    width, height = size
    if rng.random() < STUDIO_P:
        return studio_backdrop(rng, size), "studio"
    sources = background_sources()
    which = int(rng.integers(len(sources)))
    src = sources[which]
    sh, sw = src.shape[:2]
    aspect = width / height
    ch = min(sh, sw / aspect) * rng.uniform(0.45, 1.0)
    cw = ch * aspect
    y0, x0 = rng.uniform(0, sh - ch), rng.uniform(0, sw - cw)
    crop = src[int(y0) : int(y0 + ch), int(x0) : int(x0 + cw)]
    img = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = recolour(np.ascontiguousarray(img), rng)
    if rng.random() < 0.5:  # hazy or muted backdrop
        mean = img.reshape(-1, 3).mean(0)
        img = np.clip(mean + (img - mean) * rng.uniform(0.5, 0.9), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 4.0))
    return img, background_names()[which]


def studio_backdrop(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A vertical two-colour gradient."""
    width, height = size
    top, bottom = rng.uniform(150, 250, 3), rng.uniform(90, 230, 3)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t
    return np.ascontiguousarray(np.broadcast_to(img, (height, width, 3)).clip(0, 255).astype(np.uint8))


def recolour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue shift, saturation change, sometimes greyscale."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-25, 26))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.3), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if rng.random() < 0.15:
        out = np.repeat(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return out


def _card(img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, s: float, colour: tuple) -> None:
    half = np.array([rng.uniform(0.08, 0.2), rng.uniform(0.12, 0.3)]) * s
    a = rng.uniform(0, math.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    fill(img, centre + corners @ rot.T, colour)
    fill(img, centre + (corners * 0.8) @ rot.T, shade(colour, 0.45))


def _pen(img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, s: float, colour: tuple) -> None:
    d = rng.normal(size=2)
    d = d / np.linalg.norm(d) * rng.uniform(0.15, 0.4) * s
    line(img, centre - d, centre + d, colour, int(rng.integers(4, 12)))


def _ellipse(img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, s: float, colour: tuple) -> None:
    axes = (round(rng.uniform(0.1, 0.2) * s), round(rng.uniform(0.02, 0.06) * s))
    cv2.ellipse(img, (round(centre[0]), round(centre[1])), axes, rng.uniform(0, 180), 0, 360, colour, -1, AA)


def _polygon(img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, s: float, colour: tuple) -> None:
    n = int(rng.integers(3, 6))
    a = np.sort(rng.uniform(0, 2 * math.pi, n))
    r = rng.uniform(0.05, 0.15, n) * s
    fill(img, centre + np.stack([r * np.cos(a), r * np.sin(a)], 1), colour)


#: Distractor kinds: draw one at ``centre`` on an image whose shorter side is ``s``.
DISTRACTORS = {"card": _card, "pen": _pen, "ellipse": _ellipse, "polygon": _polygon}


def draw_distractors(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Non-watch objects (cards, pens, ellipses, polygons) in place."""
    h, w = img.shape[:2]
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(20, 236, 3))
        centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        kind = str(rng.choice(list(DISTRACTORS)))
        DISTRACTORS[kind](img, rng, centre, min(h, w), colour)
