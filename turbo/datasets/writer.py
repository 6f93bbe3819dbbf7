"""The COCO writer the synthetic generators share: images rendered one by one, each from its
own random stream, written with their instance annotations as COCO json (RLE masks)."""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
from PIL import Image

__all__ = [
    "Scene",
    "write_coco_split",
    "write_image",
    "write_instances_json",
    "mask_bbox",
    "map_images",
    "dump_json",
    "default_workers",
    "image_rng",
]

# (RGB image (H, W, 3) uint8, [(class index, visible mask (H, W) bool)] back to front,
#  Pillow save options: "format" and e.g. "quality")
Scene = Tuple[np.ndarray, List[Tuple[int, np.ndarray]], Dict[str, object]]
T = TypeVar("T")


def image_rng(seed: int, index: int, version: int) -> np.random.Generator:
    """The random stream of image ``index`` of a split: it depends on (seed, index, generator
    version) only, so images are the same whatever the order or number of workers."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(version)]))


def default_workers(num_images: int) -> int:
    """Threads that render a split: ``$TURBO_DATA_WORKERS``, else up to 8 for larger splits."""
    env = os.environ.get("TURBO_DATA_WORKERS")
    if env:
        return max(1, int(env))
    return 1 if num_images < 32 else max(1, min(8, os.cpu_count() or 1))


def dump_json(obj, path: str) -> None:
    """Write ``obj`` as compact json with sorted keys (the bytes depend on ``obj`` only)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True, separators=(",", ":")))
        f.write("\n")


def write_image(
    img_dir: str,
    idx: int,
    img: np.ndarray,
    insts: List[Tuple[int, np.ndarray]],
    save: Dict[str, object],
) -> Tuple[dict, List[dict]]:
    """Write image ``idx`` (RGB (H, W, 3) uint8) as ``img_dir/<NNNNNN>.<png|jpg>``; return its
    COCO image entry (id ``idx + 1``) and the annotations (RLE, category ids 1..K, no
    annotation ids) of ``insts`` ([(class index, visible mask (H, W) bool)])."""
    from pycocotools import mask as mask_util

    h, w = img.shape[:2]
    ext = {"PNG": "png", "JPEG": "jpg"}[str(save["format"])]
    file_name = f"{idx:06d}.{ext}"
    # Pillow writes no timestamp: the bytes depend on the pixels and options only.
    Image.fromarray(img, mode="RGB").save(os.path.join(img_dir, file_name), **save)
    image_id = idx + 1
    anns = []
    for cls, m in insts:
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append(
            {
                "image_id": image_id,
                "category_id": cls + 1,
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": float(m.sum()),
                "bbox": mask_bbox(m),
                "iscrowd": 0,
            }
        )
    return {"id": image_id, "file_name": file_name, "height": h, "width": w}, anns


def mask_bbox(mask: np.ndarray) -> List[float]:
    """COCO box [x, y, w, h] (absolute pixels, whole pixels) of a non-empty (H, W) mask."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


def map_images(
    fn: Callable[[int], T], num_images: int, num_workers: Optional[int] = None
) -> List[T]:
    """``[fn(0), ..., fn(num_images - 1)]`` on ``num_workers`` threads (default
    :func:`default_workers`)."""
    n = int(num_images)
    if num_workers is None:
        num_workers = default_workers(n)
    if num_workers <= 1:
        return [fn(i) for i in range(n)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(fn, range(n)))


def write_instances_json(
    path: str,
    results: Sequence[Tuple[dict, List[dict]]],
    classes: Sequence[str],
    supercategory: str,
    info: dict,
) -> str:
    """Write the COCO instances json of ``results`` ([(image entry, annotations)] of
    :func:`write_image`) to ``path``, numbering the annotations 1..; category ids 1..K for
    ``classes``. Returns ``path``."""
    images, annotations = [], []
    for entry, anns in results:
        images.append(entry)
        for a in anns:
            annotations.append({**a, "id": len(annotations) + 1})
    categories = [
        {"id": i + 1, "name": c, "supercategory": supercategory} for i, c in enumerate(classes)
    ]
    data = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    dump_json(data, path)
    return path


def write_coco_split(
    out_dir: str,
    split: str,
    num_images: int,
    render: Callable[[int], Scene],
    classes: Sequence[str],
    supercategory: str,
    info: dict,
    num_workers: Optional[int] = None,
) -> str:
    """Write ``out_dir/<split>/<NNNNNN>.<png|jpg>`` and ``out_dir/<split>.json`` (COCO
    format, category ids 1..K for ``classes``) from ``render(index)``; ``num_workers`` threads
    (default :func:`default_workers`). Returns the json path."""
    img_dir = os.path.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    results = map_images(lambda i: write_image(img_dir, i, *render(i)), num_images, num_workers)
    json_path = os.path.join(out_dir, f"{split}.json")
    return write_instances_json(json_path, results, classes, supercategory, info)
