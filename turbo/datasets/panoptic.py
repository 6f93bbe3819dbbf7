"""The synthetic panoptic dataset "shapes panoptic": the shapes (things) on a background of
two or three "stuff" regions, written in COCO panoptic format and in the separated form
Detectron2's Panoptic FPN trains on.

Every image is cut into horizontal bands by wavy boundaries, top to bottom a subset (two or
three, in this order) of ``sky`` (a smooth gradient with soft clouds), ``wall`` (staggered
bricks and mortar) and ``ground`` (fine-grained gravel or grass noise); each band is one
stuff segment. The shapes of :func:`turbo.datasets.shapes.generate_image` (six thing classes,
occluding each other, exact masks) are painted on top; what they leave visible of a band is
its segment. Every pixel belongs to exactly one segment (no void).

A split ``<split>`` is written as (``<NNNNNN>`` the image index, image id ``index + 1``)::

    <split>/<NNNNNN>.jpg                  the images (JPEG, as Detectron2's load_sem_seg expects)
    <split>.json                          COCO instances of the things (RLE, category ids 1..6)
    panoptic_<split>.json                 COCO panoptic json (things 1..6, stuff 7..9)
    panoptic_<split>/<NNNNNN>.png         COCO panoptic PNGs (segment id = R + 256 G + 256^2 B)
    panoptic_stuff_<split>/<NNNNNN>.png   semantic labels: things 0, stuff 1..3, 255 ignore

The semantic PNGs are what Detectron2's ``datasets/prepare_panoptic_fpn.py`` makes of COCO's
panoptic annotations: every thing pixel is 0, stuff category ``STUFF_IDS[k]`` is ``k + 1``,
pixels of no segment 255 (there are none here). Registration: :mod:`turbo.datasets.catalog`
(``register_coco_panoptic_separated``), cache: :mod:`turbo.datasets.cache`.
"""

from __future__ import annotations

import colorsys
import functools
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .shapes import SHAPE_CLASSES, generate_image
from .writer import dump_json, image_rng, map_images, mask_bbox, write_image, write_instances_json

__all__ = [
    "PANOPTIC_VERSION",
    "THING_CLASSES",
    "STUFF_CLASSES",
    "THING_IDS",
    "STUFF_IDS",
    "PANOPTIC_IMAGE_SIZE",
    "IGNORE_LABEL",
    "panoptic_categories",
    "panoptic_metadata",
    "panoptic_paths",
    "generate_panoptic",
    "make_panoptic",
]

# Bump whenever the generator's output changes: the cache folder name encodes it.
PANOPTIC_VERSION = 1

THING_CLASSES: Tuple[str, ...] = SHAPE_CLASSES
STUFF_CLASSES: Tuple[str, ...] = ("sky", "wall", "ground")  # top to bottom
# Dataset category ids: things 1..6, stuff 7..9 (the panoptic json's).
THING_IDS: Tuple[int, ...] = tuple(range(1, len(THING_CLASSES) + 1))
STUFF_IDS: Tuple[int, ...] = tuple(
    range(len(THING_IDS) + 1, len(THING_IDS) + 1 + len(STUFF_CLASSES))
)
PANOPTIC_IMAGE_SIZE: Tuple[int, int] = (256, 256)  # (H, W) of the regular splits
IGNORE_LABEL = 255  # semantic label of pixels of no segment
THREE_BANDS_PROB = 0.5  # else two of the three, in order
JPEG_QUALITY = (85, 96)

_THING_COLORS = (
    (220, 20, 60),
    (255, 165, 0),
    (255, 215, 0),
    (0, 128, 128),
    (65, 105, 225),
    (148, 0, 211),
)
_STUFF_COLORS = ((135, 206, 235), (178, 34, 34), (107, 142, 35))


def panoptic_categories() -> List[dict]:
    """The panoptic json's categories: things (ids 1..6, ``isthing`` 1), then stuff (7..9)."""
    things = [
        {"id": i, "name": n, "supercategory": "shape", "isthing": 1, "color": list(c)}
        for i, n, c in zip(THING_IDS, THING_CLASSES, _THING_COLORS)
    ]
    stuff = [
        {"id": i, "name": n, "supercategory": "stuff", "isthing": 0, "color": list(c)}
        for i, n, c in zip(STUFF_IDS, STUFF_CLASSES, _STUFF_COLORS)
    ]
    return things + stuff


def panoptic_metadata() -> Dict[str, object]:
    """Detectron2 metadata of the separated panoptic dataset, as Detectron2's builtin COCO
    panoptic separated metadata: things contiguous 0..5; stuff contiguous 1..3 with 0 the
    merged "things" class of the semantic labels (dataset id 0)."""
    stuff_map = {0: 0, **{d: k + 1 for k, d in enumerate(STUFF_IDS)}}
    return {
        "thing_classes": list(THING_CLASSES),
        "thing_colors": [list(c) for c in _THING_COLORS],
        "thing_dataset_id_to_contiguous_id": {d: k for k, d in enumerate(THING_IDS)},
        "stuff_classes": ["things", *STUFF_CLASSES],
        "stuff_colors": [[82, 18, 128], *(list(c) for c in _STUFF_COLORS)],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


def panoptic_paths(out_dir: str, split: str) -> Dict[str, str]:
    """Where a split lies under ``out_dir``: keys ``image_root``, ``instances_json``,
    ``panoptic_json``, ``panoptic_root``, ``sem_seg_root`` (the arguments of Detectron2's
    ``register_coco_panoptic_separated``)."""
    return {
        "image_root": os.path.join(out_dir, split),
        "instances_json": os.path.join(out_dir, f"{split}.json"),
        "panoptic_json": os.path.join(out_dir, f"panoptic_{split}.json"),
        "panoptic_root": os.path.join(out_dir, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(out_dir, f"panoptic_stuff_{split}"),
    }


# --------------------------------------------------------------------------------------
# Stuff: bands and their textures, float RGB (H, W, 3)
# --------------------------------------------------------------------------------------
def _noise(rng: np.random.Generator, h: int, w: int, cell: float, ch: int = 1) -> np.ndarray:
    """Smooth noise in about [-1, 1], (h, w, ch), varying over ``cell`` pixels."""
    import cv2

    gh, gw = max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw, ch)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, ch)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255.0


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    top = _hsv(rng.uniform(0.53, 0.66), rng.uniform(0.3, 0.8), rng.uniform(0.55, 1.0))
    if rng.uniform() < 0.25:  # dusk: warm near the horizon
        low = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.3, 0.7), rng.uniform(0.7, 1.0))
    else:
        low = top * 0.4 + 255.0 * 0.6 * rng.uniform(0.7, 1.0)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + low * t + np.zeros((1, w, 1), np.float32)
    clouds = np.clip(_noise(rng, h, w, rng.uniform(30, 80)) * 1.5 - rng.uniform(0.0, 0.8), 0, 1)
    return img * (1 - clouds) + rng.uniform(215, 255) * clouds


def _wall(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bh = int(rng.integers(6, 15))  # brick height
    bw = int(bh * rng.uniform(1.8, 3.2))
    mortar = int(rng.integers(1, 3))
    if rng.uniform() < 0.6:  # red-brown brick, else grey stone
        base = _hsv(rng.uniform(0.0, 0.08), rng.uniform(0.4, 0.8), rng.uniform(0.45, 0.85))
    else:
        base = _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.15), rng.uniform(0.4, 0.8))
    joint = _hsv(0.1, rng.uniform(0.0, 0.2), rng.uniform(0.6, 0.95))
    ys, xs = np.mgrid[0:h, 0:w]
    row = ys // bh
    shifted = xs + (row % 2) * (bw // 2)
    col = shifted // bw
    jitter = rng.uniform(0.75, 1.2, size=(h // bh + 2, w // bw + 3))
    img = base * jitter[row, col][..., None]
    is_joint = ((ys % bh) < mortar) | ((shifted % bw) < mortar)
    img[is_joint] = joint
    return img + 12.0 * _noise(rng, h, w, 3.0)


def _ground(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    hue = rng.uniform(0.05, 0.12) if rng.uniform() < 0.6 else rng.uniform(0.2, 0.33)  # soil, grass
    base = _hsv(hue, rng.uniform(0.35, 0.8), rng.uniform(0.3, 0.7))
    fine = rng.uniform(25, 50) * _noise(rng, h, w, rng.uniform(1.5, 3.0))
    coarse = rng.uniform(10, 30) * _noise(rng, h, w, rng.uniform(15, 40))
    return base + fine + coarse


_TEXTURES = (_sky, _wall, _ground)


def _bands(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """(band index map (H, W) int64, the stuff class of each band, top to bottom)."""
    if rng.uniform() < THREE_BANDS_PROB:
        classes: Tuple[int, ...] = (0, 1, 2)
        levels = [rng.uniform(0.2, 0.42), rng.uniform(0.58, 0.8)]
    else:
        drop = int(rng.integers(0, 3))
        classes = tuple(k for k in range(3) if k != drop)
        levels = [rng.uniform(0.3, 0.7)]
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)[:, None]
    band = np.zeros((h, w), np.int64)
    for level in levels:
        wave = (
            rng.uniform(0, 0.07)
            * h
            * np.sin(2 * np.pi * xs / (w * rng.uniform(0.4, 1.5)) + rng.uniform(0, 2 * np.pi))
        )
        wave += rng.uniform(0, 0.02) * h * np.sin(2 * np.pi * xs / rng.uniform(8, 24))
        band += ys >= level * h + wave[None, :]
    return band, classes


def generate_panoptic(
    rng: np.random.Generator, image_size: Tuple[int, int] = PANOPTIC_IMAGE_SIZE
) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]], List[Tuple[int, np.ndarray]]]:
    """One image: (uint8 RGB (H, W, 3), things [(thing class index, visible mask (H, W)
    bool)] back to front, stuff [(stuff class index, visible mask (H, W) bool)] top to
    bottom). All masks are non-empty and pairwise disjoint, and together cover the image."""
    h, w = int(image_size[0]), int(image_size[1])
    shapes_img, things = generate_image(rng, (h, w))
    band, classes = _bands(rng, h, w)
    bg = np.zeros((h, w, 3), np.float32)
    for k, cls in enumerate(classes):
        m = band == k
        bg[m] = _TEXTURES[cls](rng, h, w)[m]
    bg = bg * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    bg = bg + rng.normal(0.0, rng.uniform(2.0, 8.0), size=bg.shape)
    bg = np.clip(np.round(bg), 0, 255).astype(np.uint8)
    covered = np.zeros((h, w), bool)
    for _, m in things:
        covered |= m
    img = np.where(covered[..., None], shapes_img, bg)
    stuff = [(cls, (band == k) & ~covered) for k, cls in enumerate(classes)]
    return img, things, [(cls, m) for cls, m in stuff if m.any()]


def _id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids (H, W) as the RGB (H, W, 3) uint8 of a COCO panoptic PNG (the COCO panoptic
    API's own encoding)."""
    try:
        from panopticapi.utils import id2rgb
    except ImportError as e:
        raise ImportError(
            "the shapes panoptic is written with the COCO panoptic API (panopticapi, also what "
            "COCOPanopticEvaluator needs): pip install --no-deps -r requirements-nodeps.txt"
        ) from e
    return id2rgb(ids)


def _write_one(out: Dict[str, str], seed: int, image_size: Tuple[int, int], idx: int):
    """Render and write image ``idx`` with its panoptic and semantic PNGs; return (image
    entry, instance annotations, panoptic annotation)."""
    rng = image_rng(seed, idx, PANOPTIC_VERSION)
    img, things, stuff = generate_panoptic(rng, image_size)
    save = {"format": "JPEG", "quality": int(rng.integers(*JPEG_QUALITY))}
    entry, anns = write_image(out["image_root"], idx, img, things, save)
    h, w = img.shape[:2]
    ids = np.zeros((h, w), np.uint32)
    semantic = np.full((h, w), IGNORE_LABEL, np.uint8)
    segments = []
    labelled = [(THING_IDS[c], m) for c, m in things] + [(STUFF_IDS[c], m) for c, m in stuff]
    for k, (category_id, m) in enumerate(labelled):
        segment_id = k + 1
        ids[m] = segment_id
        semantic[m] = 0 if category_id in THING_IDS else STUFF_IDS.index(category_id) + 1
        segments.append(
            {
                "id": segment_id,
                "category_id": category_id,
                "iscrowd": 0,
                "bbox": [int(v) for v in mask_bbox(m)],
                "area": int(m.sum()),
            }
        )
    png = f"{idx:06d}.png"
    Image.fromarray(_id2rgb(ids)).save(os.path.join(out["panoptic_root"], png))
    Image.fromarray(semantic).save(os.path.join(out["sem_seg_root"], png))
    panoptic = {"image_id": entry["id"], "file_name": png, "segments_info": segments}
    return entry, anns, panoptic


def make_panoptic(
    out_dir: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = PANOPTIC_IMAGE_SIZE,
    num_workers: Optional[int] = None,
) -> str:
    """Write split ``split`` under ``out_dir`` (the files of :func:`panoptic_paths`).

    Deterministic whatever ``num_workers`` (threads; default ``$TURBO_DATA_WORKERS``, else up
    to 8 for larger splits). Returns the instances json path, written last.
    """
    h, w = int(image_size[0]), int(image_size[1])
    out = panoptic_paths(out_dir, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(out[key], exist_ok=True)
    info = {
        "description": "turbo synthetic shapes panoptic",
        "split": split,
        "seed": int(seed),
        "num_images": int(num_images),
        "image_size": [h, w],
        "generator_version": PANOPTIC_VERSION,
    }
    write = functools.partial(_write_one, out, int(seed), (h, w))
    results = map_images(write, num_images, num_workers)
    dump_json(
        {
            "info": info,
            "licenses": [],
            "images": [entry for entry, _, _ in results],
            "annotations": [panoptic for _, _, panoptic in results],
            "categories": panoptic_categories(),
        },
        out["panoptic_json"],
    )
    return write_instances_json(
        out["instances_json"],
        [(entry, anns) for entry, anns, _ in results],
        THING_CLASSES,
        "shape",
        info,
    )
