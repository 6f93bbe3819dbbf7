"""The synthetic instance-segmentation dataset "shapes": its generator and COCO writer.

Every image is a textured, noisy background with 3..18 painted shapes of six classes
(ellipse, triangle, star, ring, cross, crescent). Shapes are randomly rotated and scaled
(extent from 8 px to 45% of the shorter image side), may be truncated by the image border
and occlude each other (later shapes are painted over earlier ones). Masks are drawn as exact
binary masks (no anti-aliasing) and the image is composited from them, so the annotations are
the exact visible parts of each instance. Instances whose visible area is below
``MIN_VISIBLE_FRACTION`` of their full area, or below ``MIN_VISIBLE_PIXELS`` pixels, are
removed from the scene altogether (not painted), so no visible object lacks a label.

Annotations are COCO json with RLE segmentations (counts as ``str``). Because masks are RLE
(rings have holes, occluded parts can be disconnected), Detectron2 configs training on these
data must use ``cfg.INPUT.MASK_FORMAT = "bitmask"``. The on-disk cache is
:mod:`turbo.datasets.cache`, the Detectron2 registration :mod:`turbo.datasets.catalog`.
"""

from __future__ import annotations

import colorsys
import functools
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .writer import Scene, image_rng, write_coco_split

__all__ = [
    "GENERATOR_VERSION",
    "SHAPE_CLASSES",
    "NUM_CLASSES",
    "IMAGE_SIZE",
    "generate_image",
    "make_shapes",
]

# Bump whenever the generator's output changes: the cache folder name encodes it.
GENERATOR_VERSION = 1

SHAPE_CLASSES: Tuple[str, ...] = ("ellipse", "triangle", "star", "ring", "cross", "crescent")
NUM_CLASSES = len(SHAPE_CLASSES)

IMAGE_SIZE: Tuple[int, int] = (256, 256)  # (H, W) of the default splits

MIN_INSTANCES, MAX_INSTANCES = 3, 18
CROWDED_PROB = 0.3
MIN_SIZE = 8.0  # smallest object extent in pixels
MAX_SIZE_FRAC = 0.45  # largest object extent as a fraction of the shorter image side
MIN_VISIBLE_FRACTION = 0.3
SIZE_SKEW = 0.5
MIN_VISIBLE_PIXELS = 12

# Preferred hue per class; used only for a minority of instances (loose correlation).
_CLASS_HUES = (0.0, 0.13, 0.3, 0.5, 0.62, 0.8)
_CLASS_COLOR_PROB = 0.35


# --------------------------------------------------------------------------------------
# Shape masks. Each function returns a boolean patch whose pixel (i, j) has its centre at
# integer coordinates (j, i); the shape is centred at (c, c) with sub-pixel offset.
# --------------------------------------------------------------------------------------
def _grid(size: int, cx: float, cy: float, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to (cx, cy), rotated by -angle (shape frame)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xs - cx, ys - cy
    ca, sa = np.cos(angle), np.sin(angle)
    return ca * dx + sa * dy, -sa * dx + ca * dy


def _fill_polygons(size: int, polys: Sequence[np.ndarray]) -> np.ndarray:
    import cv2

    canvas = np.zeros((size, size), dtype=np.uint8)
    pts = [np.round(p * 16.0).astype(np.int32).reshape(-1, 1, 2) for p in polys]
    for p in pts:  # union of the polygons (each filled separately)
        cv2.fillPoly(canvas, [p], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def _rotate(points: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    ca, sa = np.cos(angle), np.sin(angle)
    x, y = points[:, 0], points[:, 1]
    return np.stack([ca * x - sa * y + cx, sa * x + ca * y + cy], axis=1)


def _shape_mask(cls: int, extent: float, rng: np.random.Generator) -> np.ndarray:
    """Binary mask patch of class ``cls`` whose largest extent is about ``extent`` px."""
    r = extent / 2.0
    size = int(np.ceil(extent)) + 4
    c = (size - 1) / 2.0
    cx, cy = c + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    name = SHAPE_CLASSES[cls]
    if name == "ellipse":
        b = r * rng.uniform(0.35, 1.0)
        u, v = _grid(size, cx, cy, angle)
        mask = (u / r) ** 2 + (v / b) ** 2 <= 1.0
    elif name == "triangle":
        base = rng.uniform(0.0, 2.0 * np.pi)
        angs = base + np.array([0.0, 2.0 * np.pi / 3, 4.0 * np.pi / 3])
        angs = angs + rng.uniform(-0.45, 0.45, size=3)
        rad = r * rng.uniform(0.75, 1.0, size=3)
        pts = np.stack([rad * np.cos(angs) + cx, rad * np.sin(angs) + cy], axis=1)
        mask = _fill_polygons(size, [pts])
    elif name == "star":
        n = int(rng.integers(5, 8))
        inner = rng.uniform(0.35, 0.55)
        angs = angle + np.arange(2 * n) * np.pi / n
        rad = np.where(np.arange(2 * n) % 2 == 0, r, r * inner)
        pts = np.stack([rad * np.cos(angs) + cx, rad * np.sin(angs) + cy], axis=1)
        mask = _fill_polygons(size, [pts])
    elif name == "ring":
        b = r * rng.uniform(0.6, 1.0)
        t = rng.uniform(0.45, 0.75)  # inner / outer radius
        u, v = _grid(size, cx, cy, angle)
        q = (u / r) ** 2 + (v / b) ** 2
        mask = (q <= 1.0) & (q > t * t)
    elif name == "cross":
        w = r * rng.uniform(0.22, 0.45)  # arm thickness (r = half arm length)
        la = r
        lb = r * rng.uniform(0.55, 1.0)
        off = r * rng.uniform(-0.3, 0.3)  # crossing point off-centre along arm a
        arm_a = np.array([[-la, -w / 2], [la, -w / 2], [la, w / 2], [-la, w / 2]])
        arm_b = np.array(
            [[off - w / 2, -lb], [off + w / 2, -lb], [off + w / 2, lb], [off - w / 2, lb]]
        )
        mask = _fill_polygons(size, [_rotate(arm_a, angle, cx, cy), _rotate(arm_b, angle, cx, cy)])
    elif name == "crescent":
        r2 = r * rng.uniform(0.75, 1.0)
        d = r * rng.uniform(0.3, 0.6)
        u, v = _grid(size, cx, cy, angle)
        mask = (u * u + v * v <= r * r) & ((u - d) ** 2 + v * v > r2 * r2)
    else:  # pragma: no cover
        raise ValueError(cls)
    return mask


# --------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, ch: int = 3) -> np.ndarray:
    """Low-frequency noise in [-1, 1] of shape (h, w, ch)."""
    import cv2

    gh, gw = max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw, ch)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, ch).astype(np.float64)


def _random_color(rng: np.random.Generator, hue: Optional[float] = None) -> np.ndarray:
    if hue is None:
        hue = rng.uniform(0.0, 1.0)
    s = rng.uniform(0.15, 1.0)
    v = rng.uniform(0.2, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, s, v)) * 255.0


def _linear_field(h: int, w: int, angle: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    f = np.cos(angle) * xs + np.sin(angle) * ys
    f -= f.min()
    return f / max(f.max(), 1e-6)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    import cv2

    c0, c1 = _random_color(rng), _random_color(rng)
    t = _linear_field(h, w, rng.uniform(0, 2 * np.pi))[..., None]
    img = c0 * (1 - t) + c1 * t
    img += rng.uniform(10, 45) * _smooth_noise(rng, h, w, cell=rng.uniform(12, 48))
    # Soft blobs: blurred so they never look like the crisp annotated shapes.
    for _ in range(int(rng.integers(2, 9))):
        m = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(4, max(5, w // 3))), int(rng.integers(4, max(5, h // 3))))
        cv2.ellipse(m, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        sigma = float(rng.uniform(4, 12))
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), sigma) * rng.uniform(0.4, 0.9)
        soft = soft.astype(np.float64)[..., None]
        img = img * (1 - soft) + _random_color(rng) * soft
    # Unannotated clutter: thin line strokes and small axis-aligned-ish rectangles.
    canvas = np.clip(img, 0, 255).astype(np.uint8).copy()
    for _ in range(int(rng.integers(0, 7))):
        col = tuple(float(x) for x in _random_color(rng))
        if rng.uniform() < 0.6:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(canvas, p0, p1, col, int(rng.integers(1, 3)), lineType=cv2.LINE_8)
        else:
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            bw, bh = int(rng.integers(3, max(4, w // 8))), int(rng.integers(3, max(4, h // 8)))
            cv2.rectangle(canvas, (x0, y0), (x0 + bw, y0 + bh), col, -1, lineType=cv2.LINE_8)
    return canvas.astype(np.float64)


def _object_texture(rng: np.random.Generator, cls: int, h: int, w: int) -> np.ndarray:
    hue = None
    if rng.uniform() < _CLASS_COLOR_PROB:
        hue = _CLASS_HUES[cls] + rng.normal(0.0, 0.04)
    c0 = _random_color(rng, hue)
    kind = int(rng.integers(0, 4))
    if kind == 0:  # flat
        tex = np.broadcast_to(c0, (h, w, 3)).astype(np.float64)
    elif kind == 1:  # linear gradient to a second colour
        c1 = _random_color(rng)
        t = _linear_field(h, w, rng.uniform(0, 2 * np.pi))[..., None]
        tex = c0 * (1 - t) + c1 * t
    elif kind == 2:  # stripes
        c1 = _random_color(rng)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        a = rng.uniform(0, np.pi)
        period = rng.uniform(3.0, 12.0)
        s = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(a) * xs + np.sin(a) * ys) / period)
        tex = c0 * (1 - s[..., None]) + c1 * s[..., None]
    else:  # mottled
        tex = c0 + rng.uniform(20, 60) * _smooth_noise(rng, h, w, cell=rng.uniform(3, 10))
    return tex


# --------------------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------------------
def _place(mask_shape: Tuple[int, int], top: int, left: int, h: int, w: int):
    """Slices of the image and of the patch for a patch placed at (top, left)."""
    ph, pw = mask_shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ph, h), min(left + pw, w)
    if y1 <= y0 or x1 <= x0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def _label_map(instances: List[dict], keep: List[int], h: int, w: int) -> np.ndarray:
    label = np.full((h, w), -1, dtype=np.int32)
    for k in keep:
        inst = instances[k]
        if inst["place"] is None:
            continue
        (isl, psl) = inst["place"]
        label[isl][inst["mask"][psl]] = k
    return label


def generate_image(
    rng: np.random.Generator,
    image_size: Tuple[int, int] = IMAGE_SIZE,
    min_instances: int = MIN_INSTANCES,
    max_instances: int = MAX_INSTANCES,
) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]:
    """Generate one scene: (uint8 RGB image HxWx3, [(class index, visible bool mask HxW)]).

    The returned masks are pairwise disjoint, listed back to front.
    """
    h, w = int(image_size[0]), int(image_size[1])
    crowded = rng.uniform() < CROWDED_PROB
    if crowded:
        n = int(
            rng.integers(
                max(min_instances, (min_instances + max_instances) // 2), max_instances + 1
            )
        )
        max_frac = MAX_SIZE_FRAC * 0.6
    else:
        n = int(
            rng.integers(
                min_instances, max(min_instances, (min_instances + max_instances) // 2) + 1
            )
        )
        max_frac = MAX_SIZE_FRAC
    max_size = max(MIN_SIZE + 1.0, max_frac * min(h, w))

    instances: List[dict] = []
    for _ in range(n):
        cls = int(rng.integers(0, NUM_CLASSES))
        # log-scale size, skewed towards larger sizes (SIZE_SKEW < 1) for a COCO-like mix
        u = rng.uniform() ** SIZE_SKEW
        extent = float(MIN_SIZE * (max_size / MIN_SIZE) ** u)
        mask = _shape_mask(cls, extent, rng)
        ph, pw = mask.shape
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        top, left = int(round(cy - ph / 2.0)), int(round(cx - pw / 2.0))
        place = _place(mask.shape, top, left, h, w)
        tex = _object_texture(rng, cls, ph, pw)
        instances.append(dict(cls=cls, mask=mask, full=int(mask.sum()), place=place, tex=tex))

    # Remove instances that are too occluded/truncated; removing one only uncovers the
    # instances below it, so iterate until every remaining instance passes.
    keep = [k for k, inst in enumerate(instances) if inst["full"] > 0 and inst["place"] is not None]
    while True:
        label = _label_map(instances, keep, h, w)
        counts = np.bincount(label.ravel() + 1, minlength=len(instances) + 1)[1:]
        bad = [
            k
            for k in keep
            if counts[k] < MIN_VISIBLE_PIXELS
            or counts[k] < MIN_VISIBLE_FRACTION * instances[k]["full"]
        ]
        if not bad:
            break
        keep = [k for k in keep if k not in bad]

    img = _background(rng, h, w)
    for k in keep:
        inst = instances[k]
        isl, psl = inst["place"]
        m = inst["mask"][psl]
        img[isl][m] = inst["tex"][psl][m]
    img = img * rng.uniform(0.8, 1.15) + rng.uniform(-20, 20)  # global contrast/brightness
    img = img + rng.normal(0.0, rng.uniform(2.0, 10.0), size=img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    out = [(instances[k]["cls"], label == k) for k in keep]
    return img, out


def _render(
    seed: int, image_size: Tuple[int, int], min_instances: int, max_instances: int, idx: int
) -> Scene:
    img, insts = generate_image(
        image_rng(seed, idx, GENERATOR_VERSION), image_size, min_instances, max_instances
    )
    return img, insts, {"format": "PNG"}


def make_shapes(
    out_dir: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = IMAGE_SIZE,
    min_instances: int = MIN_INSTANCES,
    max_instances: int = MAX_INSTANCES,
    num_workers: Optional[int] = None,
) -> str:
    """Write ``out_dir/<split>/<NNNNNN>.png`` and ``out_dir/<split>.json`` (COCO format).

    Deterministic: the same arguments give byte-identical files, whatever ``num_workers``
    (each image has its own random stream derived from (seed, index)). ``num_workers``
    threads render images (default: ``$TURBO_DATA_WORKERS``, else up to 8 for larger
    splits). Returns the json path.
    """
    h, w = int(image_size[0]), int(image_size[1])
    info = {
        "description": "turbo synthetic shapes",
        "split": split,
        "seed": int(seed),
        "num_images": int(num_images),
        "image_size": [h, w],
        "generator_version": GENERATOR_VERSION,
    }
    render = functools.partial(_render, int(seed), (h, w), min_instances, max_instances)
    return write_coco_split(
        out_dir, split, num_images, render, SHAPE_CLASSES, "shape", info, num_workers
    )
