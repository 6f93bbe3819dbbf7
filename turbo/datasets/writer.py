"""The COCO writer the synthetic generators share: images rendered one by one, each from its
own random stream, written with their instance annotations as COCO json (RLE masks)."""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ["Scene", "write_coco_split", "default_workers", "image_rng"]

# (RGB image (H, W, 3) uint8, [(class index, visible mask (H, W) bool)] back to front,
#  Pillow save options: "format" and e.g. "quality")
Scene = Tuple[np.ndarray, List[Tuple[int, np.ndarray]], Dict[str, object]]


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


def _dump_json(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True, separators=(",", ":")))
        f.write("\n")


def _write_one(img_dir: str, render: Callable[[int], Scene], idx: int) -> Tuple[dict, List[dict]]:
    """Render image ``idx``, write it; return its image entry and annotations (no ids)."""
    from pycocotools import mask as mask_util

    img, insts, save = render(idx)
    h, w = img.shape[:2]
    ext = {"PNG": "png", "JPEG": "jpg"}[str(save["format"])]
    file_name = f"{idx:06d}.{ext}"
    # Pillow writes no timestamp: the bytes depend on the pixels and options only.
    Image.fromarray(img, mode="RGB").save(os.path.join(img_dir, file_name), **save)
    image_id = idx + 1
    anns = []
    for cls, m in insts:
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        ys, xs = np.nonzero(m)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        anns.append(
            {
                "image_id": image_id,
                "category_id": cls + 1,
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": float(m.sum()),
                "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
                "iscrowd": 0,
            }
        )
    return {"id": image_id, "file_name": file_name, "height": h, "width": w}, anns


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
    n = int(num_images)
    if num_workers is None:
        num_workers = default_workers(n)
    if num_workers <= 1:
        results = [_write_one(img_dir, render, i) for i in range(n)]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            results = list(pool.map(lambda i: _write_one(img_dir, render, i), range(n)))
    images, annotations = [], []
    for entry, anns in results:
        images.append(entry)
        for a in anns:
            a["id"] = len(annotations) + 1
            annotations.append(a)
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
    json_path = os.path.join(out_dir, f"{split}.json")
    _dump_json(data, json_path)
    return json_path
