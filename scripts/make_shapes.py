#!/usr/bin/env python
"""Generate a split of the synthetic "shapes" dataset, and optionally preview it.

Examples:
    python scripts/make_shapes.py --split val --num-images 200 --seed 1
    python scripts/make_shapes.py --split val --num-images 200 --seed 1 --preview 12
    python scripts/make_shapes.py --defaults          # every registered split into the cache

Without ``--out`` the split goes into the cache (``--root``, else $TURBO_DATASETS, else
~/.cache/turbo/datasets) under the folder ``turbo.datasets.split_dir`` names, which is where
``turbo.datasets.register_shapes`` looks for it. With ``--out DIR`` it is written to
``DIR/<split>/`` and ``DIR/<split>.json`` directly.
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import json
import os
import time

import numpy as np

from turbo import datasets as shapes


def _preview(json_file: str, image_root: str, n: int, out_png: str, cols: int = 4) -> str:
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets import load_coco_json
    from detectron2.utils.visualizer import Visualizer
    from PIL import Image

    with open(json_file) as f:
        num = len(json.load(f)["images"])
    name = f"_shapes_preview_{os.getpid()}"
    meta = MetadataCatalog.get(name)
    meta.set(thing_classes=list(shapes.SHAPE_CLASSES))
    dicts = load_coco_json(json_file, image_root, name)[: min(n, num)]
    tiles = []
    for d in dicts:
        img = np.asarray(Image.open(d["file_name"]).convert("RGB"))
        vis = Visualizer(img, metadata=meta, scale=2.0)
        drawn = vis.draw_dataset_dict(d).get_image()
        raw = np.asarray(Image.fromarray(img).resize(drawn.shape[1::-1], Image.NEAREST))
        tiles.append(np.concatenate([raw, drawn], axis=1))
    if not tiles:
        raise SystemExit("no images to preview")
    h, w = tiles[0].shape[:2]
    cols = max(1, min(cols, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    grid = np.full((rows * (h + 4), cols * (w + 4), 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * (h + 4) : r * (h + 4) + h, c * (w + 4) : c * (w + 4) + w] = t
    Image.fromarray(grid).save(out_png)
    return out_png


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--root",
        default=None,
        help="cache root (default: $TURBO_DATASETS or ~/.cache/turbo/datasets)",
    )
    p.add_argument(
        "--out", default=None, help="write directly into this folder instead of the cache"
    )
    p.add_argument("--split", default="val")
    _, val_images, val_seed, _ = shapes.DEFAULT_SPLITS["shapes_val"]
    p.add_argument("--num-images", type=int, default=val_images)
    p.add_argument("--seed", type=int, default=val_seed)
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=list(shapes.IMAGE_SIZE),
        help="image size: H W (or one number for square images)",
    )
    p.add_argument(
        "--defaults",
        action="store_true",
        help="generate the registered default splits (train, val, tune, tune_large) into the cache",
    )
    p.add_argument(
        "--preview",
        type=int,
        default=0,
        metavar="N",
        help="also write a PNG grid of the first N images with masks overlaid",
    )
    p.add_argument("--preview-out", default=None, help="path of the preview PNG")
    args = p.parse_args(argv)

    size = tuple(args.size) * 2 if len(args.size) == 1 else tuple(args.size[:2])
    if args.defaults:
        jobs = list(shapes.DEFAULT_SPLITS.values())
    else:
        jobs = [(args.split, args.num_images, args.seed, size)]

    for split, n, seed, sz in jobs:
        t0 = time.time()
        if args.out:
            json_file = shapes.make_shapes(args.out, split, n, seed, sz)
            image_root = os.path.join(args.out, split)
        else:
            json_file, image_root = shapes.ensure_shapes(split, n, seed, sz, root=args.root)
        with open(json_file) as f:
            num_anns = len(json.load(f)["annotations"])
        print(
            f"{split}: {n} images, {num_anns} instances, {sz[0]}x{sz[1]} "
            f"-> {json_file} (images in {image_root}) [{time.time() - t0:.1f}s]"
        )
        if args.preview:
            out_png = args.preview_out or os.path.join(
                os.path.dirname(json_file), f"{split}_preview.png"
            )
            print("preview:", _preview(json_file, image_root, args.preview, out_png))


if __name__ == "__main__":
    main()
