"""The synthetic instance-segmentation dataset "scenes": photo-like images, built to be unlike
the shapes.

Backgrounds and object textures are cut from real photographs that scikit-image and
matplotlib ship with their packages (nothing is downloaded). Outlines are not geometric
primitives: irregular blobs, blobs with holes, the silhouette of a horse (thin legs), thin
bent worms, and claws (a core with bent fingers: concave). Each object is rendered as an
anti-aliased alpha matte (4x supersampled coverage), some defocused, and composited back to
front over the background (layered occlusion); then lighting, sensor noise and JPEG
compression. The annotation of an object is its visible part at the alpha threshold: the
pixels where its alpha, attenuated by the objects in front of it, is above
``ALPHA_THRESH``. Objects whose visible part is below ``MIN_VISIBLE_PIXELS`` pixels or
``MIN_VISIBLE_FRACTION`` of their own are removed from the scene (not painted), so no visible
object lacks a label. Crowded images (``crowd=True``, the ``scenes_crowd_val`` split) hold 30
to 80 objects, many small.

Annotations are COCO json with RLE segmentations, as for the shapes: train with
``INPUT.MASK_FORMAT bitmask``.
"""

from __future__ import annotations

import functools
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .writer import Scene, image_rng, write_coco_split

__all__ = [
    "SCENES_VERSION",
    "SCENE_CLASSES",
    "NUM_SCENE_CLASSES",
    "SCENE_IMAGE_SIZE",
    "CROWD_IMAGE_SIZE",
    "CROWD_INSTANCES",
    "ALPHA_THRESH",
    "photos",
    "generate_scene",
    "visible_alphas",
    "make_scenes",
]

# Bump whenever the generator's output changes: the cache folder name encodes it.
SCENES_VERSION = 2

SCENE_CLASSES: Tuple[str, ...] = ("blob", "holed", "horse", "worm", "claw")
NUM_SCENE_CLASSES = len(SCENE_CLASSES)
SCENE_IMAGE_SIZE: Tuple[int, int] = (256, 256)  # (H, W) of the regular splits
CROWD_IMAGE_SIZE: Tuple[int, int] = (384, 384)  # of the crowded split
INSTANCES = (3, 20)  # objects per regular image (before removing the hidden ones)
CROWD_INSTANCES = (30, 80)  # objects per crowded image, after removing the hidden ones
CROWD_PROB = 0.25  # share of crowded images in the regular splits (for training on crowds)
MIN_SIZE = 10.0  # smallest object extent in pixels
MAX_SIZE_FRAC = 0.5  # largest extent, as a fraction of the shorter side
CROWD_MAX_SIZE_FRAC = 0.16
ALPHA_THRESH = 0.5  # an object covers a pixel where its visible alpha is above this
MIN_VISIBLE_PIXELS = 12
MIN_VISIBLE_FRACTION = 0.25
SUPERSAMPLE = 4

# (package, file) of the photographs; the first group are scenes and objects, the second
# textures. All ship inside the packages' wheels.
_PHOTOS = (
    ("skimage", "astronaut.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "ihc.png"),
    ("skimage", "retina.jpg"),
    ("skimage", "color.png"),
    ("matplotlib", "grace_hopper.jpg"),
    ("skimage", "brick.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("skimage", "camera.png"),
    ("skimage", "coins.png"),
    ("skimage", "moon.png"),
)


def _package_file(package: str, name: str) -> str:
    if package == "skimage":
        import skimage.data

        return os.path.join(os.path.dirname(skimage.data.__file__), name)
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data(name, asfileobj=False))


@functools.cache
def photos() -> Tuple[np.ndarray, ...]:
    """The photographs as RGB float32 arrays (H, W, 3) in [0, 255], read once."""
    from PIL import Image

    out = []
    for package, name in _PHOTOS:
        path = _package_file(package, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"the scenes dataset needs {name} from the {package} package ({path} is "
                "missing): pip install scikit-image matplotlib"
            )
        out.append(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32))
    return tuple(out)


@functools.cache
def _horse() -> np.ndarray:
    """scikit-image's horse silhouette, cropped to its extent: bool (H, W)."""
    from PIL import Image

    img = np.asarray(Image.open(_package_file("skimage", "horse.png")).convert("L"))
    mask = img < 128
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


# --------------------------------------------------------------------------------------
# Outlines, drawn in a square patch of side ``size`` (pixels of the supersampled frame)
# --------------------------------------------------------------------------------------
def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    """An irregular star-convex outline: a radius with random low harmonics."""
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 7):
        r += rng.uniform(0, 0.3 / k**0.5) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.35, None) / r.max()
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _fill(canvas: np.ndarray, poly: np.ndarray, value: int = 1) -> None:
    import cv2

    cv2.fillPoly(canvas, [np.round(poly * 16).astype(np.int32).reshape(-1, 1, 2)], value, shift=4)


def _polyline(
    canvas: np.ndarray, points: np.ndarray, thickness: float, value: int = 1
) -> np.ndarray:
    import cv2

    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, value, max(1, int(round(thickness))), shift=4)
    for x, y in points[[0, -1]]:  # round caps
        cv2.circle(canvas, (int(x), int(y)), max(1, int(round(thickness / 2))), value, -1)
    return canvas


def _bent_path(rng: np.random.Generator, start: np.ndarray, length: float, n: int) -> np.ndarray:
    """A smooth random walk of ``n`` segments of total ``length`` from ``start``."""
    angle = rng.uniform(0, 2 * np.pi)
    pts = [start]
    for _ in range(n):
        angle += rng.normal(0, 0.6)
        pts.append(pts[-1] + length / n * np.array([np.cos(angle), np.sin(angle)]))
    return np.array(pts)


def _outline(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The outline of class ``cls`` filling most of a ``size`` x ``size`` patch: bool."""
    import cv2

    canvas = np.zeros((size, size), np.uint8)
    c = size / 2.0
    name = SCENE_CLASSES[cls]
    if name in ("blob", "holed"):
        _fill(canvas, _blob_polygon(rng, c, c, 0.48 * size))
        if name == "holed":
            for _ in range(int(rng.integers(1, 4))):
                d = rng.uniform(0, 0.18 * size, 2) * rng.choice([-1, 1], 2)
                _fill(
                    canvas,
                    _blob_polygon(rng, c + d[0], c + d[1], rng.uniform(0.08, 0.18) * size),
                    0,
                )
    elif name == "horse":
        horse = _horse()
        s = 0.95 * size / max(horse.shape)
        h, w = max(1, int(horse.shape[0] * s)), max(1, int(horse.shape[1] * s))
        small = cv2.resize(horse.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        if rng.uniform() < 0.5:
            small = small[:, ::-1]
        y0, x0 = (size - h) // 2, (size - w) // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = small
    elif name == "worm":
        path = _bent_path(rng, np.zeros(2), 1.0, int(rng.integers(4, 9)))
        path -= (path.min(0) + path.max(0)) / 2
        path *= 0.85 * size / max(np.ptp(path, 0).max(), 1e-6)
        _polyline(canvas, path + c, rng.uniform(0.06, 0.14) * size)
    else:  # claw: a core with bent fingers
        _fill(canvas, _blob_polygon(rng, c, c, rng.uniform(0.18, 0.26) * size))
        for _ in range(int(rng.integers(3, 6))):
            start = np.array([c, c])
            finger = _bent_path(rng, start, rng.uniform(0.3, 0.48) * size, 3)
            _polyline(canvas, finger, rng.uniform(0.05, 0.09) * size)
    mask = canvas.astype(bool)
    angle = rng.uniform(0, 360)
    rot = cv2.getRotationMatrix2D((c, c), angle, 1.0)
    return cv2.warpAffine(mask.astype(np.uint8), rot, (size, size), flags=cv2.INTER_NEAREST) > 0


def _alpha(cls: int, extent: float, rng: np.random.Generator) -> np.ndarray:
    """An anti-aliased, possibly defocused alpha matte (P, P) float32 in [0, 1] of an object
    of about ``extent`` pixels."""
    import cv2

    p = int(np.ceil(extent)) + 6
    hi = _outline(cls, p * SUPERSAMPLE, rng).astype(np.float32)
    alpha = cv2.resize(hi, (p, p), interpolation=cv2.INTER_AREA)  # coverage of each pixel
    if rng.uniform() < 0.5:  # defocus
        alpha = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.4, 1.5))
    return np.clip(alpha, 0.0, 1.0)


def _crop(rng: np.random.Generator, photo: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random crop of ``photo`` resized to (h, w), flipped at random."""
    import cv2

    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.25, 1.0)
    ch, cw = max(8, int(ph * scale)), max(8, int(pw * scale))
    aspect = w / h
    # cut the crop to the target's aspect (too wide: narrower; too tall: shorter)
    if cw / ch > aspect:
        cw = max(1, int(ch * aspect))
    else:
        ch = max(1, int(cw / aspect))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    out = cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    return out[:, ::-1] if rng.uniform() < 0.5 else out


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An object's surface: a photo crop, colour-jittered and lit by a linear gradient."""
    tex = _crop(rng, photos()[int(rng.integers(0, len(photos())))], h, w)
    mix = np.eye(3) * rng.uniform(0.6, 1.0) + rng.uniform(0, 0.4, (3, 3))
    tex = tex @ (mix / mix.sum(0, keepdims=True)).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(a) * xs + np.sin(a) * ys) / max(h, w)
    return tex * (1.0 + rng.uniform(0.0, 0.5) * (grad - grad.mean()))[..., None]


def _placement(shape: Tuple[int, int], cy: float, cx: float, h: int, w: int):
    """(image slices, patch slices) of a patch centred at (cy, cx), cut at the border; None
    when it misses the image."""
    ph, pw = shape
    top, left = int(round(cy - ph / 2)), int(round(cx - pw / 2))
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + ph, h), min(left + pw, w)
    if y1 <= y0 or x1 <= x0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def generate_scene(
    rng: np.random.Generator,
    image_size: Tuple[int, int] = SCENE_IMAGE_SIZE,
    instances: Tuple[int, int] = INSTANCES,
    crowd: Optional[bool] = None,
    return_alphas: bool = False,
):
    """One scene: (uint8 RGB image (H, W, 3), [(class index, visible mask (H, W) bool)], back
    to front); with ``return_alphas`` also each object's own alpha matte (H, W) float32, in
    the same order. ``crowd``: 30 to 80 small objects (default: with probability
    ``CROWD_PROB``). The masks are pairwise disjoint: each is the object's visible alpha
    (:func:`visible_alphas`) above ``ALPHA_THRESH`` (visible alphas sum to at most 1)."""
    h, w = int(image_size[0]), int(image_size[1])
    if crowd is None:
        crowd = rng.uniform() < CROWD_PROB
    lo, hi = CROWD_INSTANCES if crowd else instances
    # crowds are drawn with spares: hidden objects leave the scene
    n = int(rng.integers(lo, hi + 1))
    drawn = int(n * 1.8) + 8 if crowd else n
    max_size = max(MIN_SIZE + 1, (CROWD_MAX_SIZE_FRAC if crowd else MAX_SIZE_FRAC) * min(h, w))
    objects = []
    for _ in range(drawn):
        cls = int(rng.integers(0, NUM_SCENE_CLASSES))
        extent = float(MIN_SIZE * (max_size / MIN_SIZE) ** (rng.uniform() ** 0.7))
        alpha = _alpha(cls, extent, rng)
        place = _placement(alpha.shape, rng.uniform(0, h), rng.uniform(0, w), h, w)
        if place is None:
            continue
        full = np.zeros((h, w), np.float32)
        full[place[0]] = alpha[place[1]]
        own = int((full > ALPHA_THRESH).sum())
        if own == 0:
            continue
        objects.append(dict(cls=cls, alpha=full, own=own, tex=_texture(rng, h, w)))

    keep = list(range(len(objects)))
    while True:  # removing an object uncovers those behind it: repeat until all pass
        visible = visible_alphas([objects[k]["alpha"] for k in keep])
        bad = [
            k
            for k, v in zip(keep, visible)
            if (v > ALPHA_THRESH).sum()
            < max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * objects[k]["own"])
        ]
        if not bad:
            break
        keep = [k for k in keep if k not in bad]
    if crowd:
        keep = keep[:n]
        visible = visible_alphas([objects[k]["alpha"] for k in keep])

    img = _crop(rng, photos()[int(rng.integers(0, len(photos())))], h, w)
    if rng.uniform() < 0.6:  # a background out of focus
        import cv2

        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 3.0))
    for k in keep:
        a = objects[k]["alpha"][..., None]
        img = a * objects[k]["tex"] + (1 - a) * img
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 + rng.uniform(0, 0.35) * np.cos(
        2 * np.pi * (xs * rng.uniform(-1, 1) + ys * rng.uniform(-1, 1)) / max(h, w)
        + rng.uniform(0, 6.3)
    )
    img = img * light[..., None] * rng.uniform(0.75, 1.15) + rng.uniform(-15, 15)
    img = img + rng.normal(0, 1, img.shape) * (
        rng.uniform(1.5, 6.0) + 0.25 * np.sqrt(np.clip(img, 0, None))
    )
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    out = [(objects[k]["cls"], v > ALPHA_THRESH) for k, v in zip(keep, visible)]
    if return_alphas:
        return img, out, [objects[k]["alpha"] for k in keep]
    return img, out


def visible_alphas(alphas: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The visible alpha of each of a stack of alpha mattes listed back to front: its own
    alpha times the transparency (1 - alpha) of every matte in front of it."""
    out = []
    through = np.ones_like(alphas[0]) if len(alphas) else None
    for a in reversed(alphas):
        out.append(a * through)
        through = through * (1 - a)
    return out[::-1]


def _render(seed: int, image_size: Tuple[int, int], crowd: Optional[bool], idx: int) -> Scene:
    rng = image_rng(seed, idx, SCENES_VERSION)
    img, insts = generate_scene(rng, image_size, crowd=crowd)
    return img, insts, {"format": "JPEG", "quality": int(rng.integers(60, 96))}


def make_scenes(
    out_dir: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = SCENE_IMAGE_SIZE,
    crowd: Optional[bool] = None,
    num_workers: Optional[int] = None,
) -> str:
    """Write ``out_dir/<split>/<NNNNNN>.jpg`` and ``out_dir/<split>.json`` (COCO format).
    ``crowd``: every image crowded (True), none (False), or a share ``CROWD_PROB`` (None).
    Deterministic whatever ``num_workers``. Returns the json path."""
    h, w = int(image_size[0]), int(image_size[1])
    info = {
        "description": "turbo synthetic photo-like scenes",
        "split": split,
        "seed": int(seed),
        "num_images": int(num_images),
        "image_size": [h, w],
        "crowd": crowd,
        "generator_version": SCENES_VERSION,
    }
    render = functools.partial(_render, int(seed), (h, w), crowd)
    return write_coco_split(
        out_dir, split, num_images, render, SCENE_CLASSES, "object", info, num_workers
    )
