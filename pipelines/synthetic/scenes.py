"""Photos and scenes: place rendered watches (rotation + mild perspective), alpha-composite them with a drop shadow
on a backdrop, and finish like a camera would (lighting, blur, noise, JPEG).

Each image draws from its own ``numpy.random.SeedSequence`` (seed, kind, indices), so its bytes do not depend on
generation order or on the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipelines.synthetic.backgrounds import draw_distractors, make_background
from pipelines.synthetic.brands import BrandSpec
from pipelines.synthetic.difficulty import HARD_OCCLUDED_P, HARD_PHOTO_SIZE, harsh_light, occlude, sample_hard_watch
from pipelines.synthetic.variant import sample_variant
from pipelines.synthetic.watch import Sprite, render_watch

# Sizes are the head box's longer side over the image's shorter side.
PHOTO_LARGE = (0.25, 0.70)
PHOTO_SMALL = (0.10, 0.25)
PHOTO_SMALL_P = 0.2  # share of product photos with a small watch
SCENE_SIZE = (0.15, 0.35)
SCENE_EMPTY_P = 0.2  # share of scenes without a watch


def sample_photo_size(rng: np.random.Generator, small_p: float = PHOTO_SMALL_P) -> float:
    """Relative size of a product photo's watch: mostly large, a share ``small_p`` small."""
    lo, hi = PHOTO_SMALL if rng.random() < small_p else PHOTO_LARGE
    return float(rng.uniform(lo, hi))


@dataclass
class Pose:
    """Where a sprite goes: canvas -> image homography and the head box (x1, y1, x2, y2) it produces."""

    matrix: np.ndarray
    head: np.ndarray
    full: np.ndarray
    scale: float  # image pixels per canvas pixel, roughly
    angle: float  # rotation in degrees, clockwise on screen


def sample_pose(
    sprite: Sprite,
    rng: np.random.Generator,
    side: float,
    image_size: tuple[int, int],
    centre: tuple[float, float] | None = None,
) -> Pose:
    """Rotation + mild perspective, scaled so that the head box's longer side is ``side`` px, fully inside the image."""
    width, height = image_size
    angle = rng.uniform(-20, 20) if rng.random() < 0.9 else rng.uniform(-60, 60)
    a = math.radians(angle)
    r, (cx, cy) = sprite.radius, sprite.centre
    norm = np.array([[1 / r, 0, -cx / r], [0, 1 / r, -cy / r], [0, 0, 1]])
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    jitter = rng.uniform(-0.1, 0.1, (4, 2)).astype(np.float32)
    unit = cv2.getPerspectiveTransform(square, square + jitter) @ rot @ norm
    pts = cv2.perspectiveTransform(sprite.outline.reshape(-1, 1, 2).astype(np.float64), unit).reshape(-1, 2)
    lo, hi = pts.min(0), pts.max(0)
    k = side / float((hi - lo).max())
    half = (hi - lo) * k / 2
    if centre is None:
        centre = (rng.uniform(half[0], width - half[0]), rng.uniform(half[1], height - half[1]))
    shift = np.array(
        [[k, 0, centre[0] - k * (lo[0] + hi[0]) / 2], [0, k, centre[1] - k * (lo[1] + hi[1]) / 2], [0, 0, 1]]
    )
    matrix = shift @ unit
    head = np.array([centre[0] - half[0], centre[1] - half[1], centre[0] + half[0], centre[1] + half[1]])
    h, w = sprite.rgba.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64).reshape(-1, 1, 2)
    cpts = cv2.perspectiveTransform(corners, matrix).reshape(-1, 2)
    return Pose(matrix, head, np.concatenate([cpts.min(0), cpts.max(0)]), k / sprite.radius, angle)


def composite(img: np.ndarray, sprite: Sprite, pose: Pose, rng: np.random.Generator) -> None:
    """Warp ``sprite`` by ``pose`` and alpha-composite it (with a soft drop shadow) onto ``img`` in place."""
    height, width = img.shape[:2]
    matrix, rgba = pose.matrix, sprite.rgba
    if pose.scale < 0.75:  # pre-shrink with area averaging so fine lines do not alias
        f = pose.scale * 1.3
        rgba = cv2.resize(rgba, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([1 / f, 1 / f, 1])
    side = float(max(pose.head[2] - pose.head[0], pose.head[3] - pose.head[1]))
    margin = int(0.08 * side) + 2
    x0, y0 = (max(0, int(v) - margin) for v in pose.full[:2])
    x1, y1 = min(width, int(pose.full[2]) + margin + 1), min(height, int(pose.full[3]) + margin + 1)
    if x1 <= x0 or y1 <= y0:
        return
    m = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ matrix
    warped = cv2.warpPerspective(rgba, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    fg = warped[..., :3].astype(np.float32)
    alpha = warped[..., 3:].astype(np.float32) / 255
    shadow_shift = np.float32([[1, 0, rng.uniform(-0.04, 0.04) * side], [0, 1, rng.uniform(0.0, 0.05) * side]])
    shadow = cv2.warpAffine(alpha, shadow_shift, (x1 - x0, y1 - y0))
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.02 * side + 0.5)[..., None] * rng.uniform(0.25, 0.55)
    roi = img[y0:y1, x0:x1].astype(np.float32) * (1 - shadow)
    img[y0:y1, x0:x1] = np.clip(roi * (1 - alpha) + fg, 0, 255).astype(np.uint8)


def finish_photo(img: np.ndarray, rng: np.random.Generator, quality: tuple[int, int] = (55, 96),
                 noise: tuple[float, float] = (1.0, 7.0)) -> bytes:
    """Lighting, blur, sensor noise (``noise``: range of its standard deviation) and JPEG compression (``quality``:
    range, upper bound excluded); returns the JPEG bytes."""
    height, width = img.shape[:2]
    a, slope = rng.uniform(0, 2 * math.pi), rng.uniform(-0.35, 0.35) / max(width, height)
    xs = (np.arange(width, dtype=np.float32) - width / 2) * (slope * math.cos(a))
    ys = (np.arange(height, dtype=np.float32) - height / 2) * (slope * math.sin(a))
    gain = (rng.uniform(0.75, 1.15) * (1 + xs[None, :, None] + ys[:, None, None])).astype(np.float32)
    out = img * (gain * rng.uniform(0.94, 1.06, 3).astype(np.float32))
    if rng.random() < 0.35:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.5))
    elif rng.random() < 0.1:  # motion blur
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.7:
        grain = rng.standard_normal(out.shape, dtype=np.float32)
        out = cv2.scaleAdd(grain, rng.uniform(*noise), out)
    bgr = cv2.cvtColor(np.clip(out, 0, 255, out=out).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*quality))])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


@dataclass
class Rendered:
    """One synthetic image: its JPEG bytes, its watches (brand index, COCO bbox, rel_size, attributes), its backdrop."""

    jpeg: bytes
    objects: list[dict[str, Any]]
    background: str


def _object(sprite: Sprite, pose: Pose, brand: int, image_size: tuple[int, int]) -> dict[str, Any]:
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in pose.head)
    x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
    v = sprite.variant
    return {
        "brand": brand,
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "rel_size": round(max(x2 - x1, y2 - y1) / min(width, height), 4),
        "attributes": {"dial": v.dial, "metal": v.metal, "strap": v.strap, "rotation": round(pose.angle, 1)},
    }


def sample_hard_pose(sprite: Sprite, rng: np.random.Generator, side: float, image_size: tuple[int, int]) -> Pose:
    """`sample_pose` with stronger tilt and perspective (the hard variant)."""
    pose = sample_pose(sprite, rng, side, image_size)
    width, height = image_size
    angle = math.radians(float(rng.uniform(-35, 35)))
    squeeze = float(rng.uniform(0.7, 1.0))  # the watch seen at an angle: foreshortened along one axis
    centre = (pose.head[:2] + pose.head[2:]) / 2
    to_centre = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    tilt = rot.T @ np.diag([1.0, squeeze, 1.0]) @ rot
    matrix = np.linalg.inv(to_centre) @ tilt @ to_centre @ pose.matrix
    pts = cv2.perspectiveTransform(sprite.outline.reshape(-1, 1, 2).astype(np.float64), matrix).reshape(-1, 2)
    h, w = sprite.rgba.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64).reshape(-1, 1, 2)
    cpts = cv2.perspectiveTransform(corners, matrix).reshape(-1, 2)
    head = np.concatenate([pts.min(0), pts.max(0)])
    head = np.clip(head, 0, [width, height, width, height])
    return Pose(matrix, head, np.concatenate([cpts.min(0), cpts.max(0)]), pose.scale, pose.angle)


def render_hard_photo(specs: Sequence[BrandSpec], brand: int, index: int, seed: int,
                      size: tuple[int, int]) -> Rendered:  # fmt: skip
    """The hard variant's product photo (see `pipelines.synthetic.difficulty`); depends only on (seed, brand, index)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, brand, index)))
    img, background = make_background(rng, size)
    if rng.random() < 0.5:
        draw_distractors(img, rng, int(rng.integers(1, 4)))
    drawn, variant = sample_hard_watch(specs[brand], rng)
    sprite = render_watch(drawn, variant)
    pose = sample_hard_pose(sprite, rng, float(rng.uniform(*HARD_PHOTO_SIZE)) * min(size), size)
    composite(img, sprite, pose, rng)
    if rng.random() < HARD_OCCLUDED_P:
        occlude(img, pose.head, rng)
    lit = np.clip(harsh_light(img, rng), 0, 255).astype(np.uint8)
    return Rendered(finish_photo(lit, rng, quality=(45, 85), noise=(2.0, 9.0)),
                    [_object(sprite, pose, brand, size)], background)  # fmt: skip


def render_photo(
    specs: Sequence[BrandSpec], brand: int, index: int, seed: int, size: tuple[int, int],
    small_p: float = PHOTO_SMALL_P, difficulty: str = "normal",
) -> Rendered:  # fmt: skip
    """Product photo ``index`` of brand ``brand``: one watch; depends only on (seed, brand, index)."""
    if difficulty == "hard":
        return render_hard_photo(specs, brand, index, seed, size)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, brand, index)))
    img, background = make_background(rng, size)
    if rng.random() < 0.3:
        draw_distractors(img, rng, int(rng.integers(1, 4)))
    sprite = render_watch(specs[brand], sample_variant(specs[brand], rng))
    pose = sample_pose(sprite, rng, sample_photo_size(rng, small_p) * min(size), size)
    composite(img, sprite, pose, rng)
    return Rendered(finish_photo(img, rng), [_object(sprite, pose, brand, size)], background)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def render_scene(specs: Sequence[BrandSpec], index: int, seed: int, size: tuple[int, int],
                 difficulty: str = "normal") -> Rendered:  # fmt: skip
    """Scene ``index`` for batch labeling: 2-4 watches of different brands (or, now and then, none); ``hard``: the
    watches are drawn as in the hard product photos (shared dial word, details drawn per watch)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))
    img, background = make_background(rng, size)
    if rng.random() < 0.5:
        draw_distractors(img, rng, int(rng.integers(1, 4)))
    count = 0 if rng.random() < SCENE_EMPTY_P else int(rng.integers(2, 5))
    brands = rng.permutation(len(specs))[: min(count, len(specs))]
    placed: list[tuple[Sprite, Pose, int]] = []
    for brand in brands:
        if difficulty == "hard":
            sprite = render_watch(*sample_hard_watch(specs[int(brand)], rng))
        else:
            sprite = render_watch(specs[int(brand)], sample_variant(specs[int(brand)], rng))
        for _ in range(60):
            pose = sample_pose(sprite, rng, rng.uniform(*SCENE_SIZE) * min(size), size)
            if not any(_overlaps(pose.head, p.full) or _overlaps(pose.full, p.head) for _, p, _ in placed):
                placed.append((sprite, pose, int(brand)))
                break
    for sprite, pose, _ in placed:
        composite(img, sprite, pose, rng)
    return Rendered(finish_photo(img, rng), [_object(s, p, b, size) for s, p, b in placed], background)
