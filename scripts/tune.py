#!/usr/bin/env python
"""Sweep Turbo's thresholds on a tuning split (never the reported one), one key at a time.

Starting from the model's configured ``MODEL.TURBO`` values, each key in ``--sweep`` is varied
over its grid with the others held, all variants evaluated in one pass over the images (shared
backbone and RPN). Prints a table sorted by box AP + mask AP and writes it to ``--output``.

    python scripts/tune.py --config-file configs/shapes/turbo_mask_rcnn_R18_FPN.yaml \
        --weights checkpoints/shapes_mask_rcnn_R18_FPN.pth --dataset shapes_tune
"""
import argparse
import dataclasses
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

GRID = {
    "box_thresh": [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5],
    "maskness_thresh": [0.2, 0.35, 0.5, 0.65],
    "maskness_weight": [0.0, 0.2, 0.35, 0.5, 0.75, 1.0],
    "box_fusion": [0.0, 0.25, 0.5, 0.75],
    "num_iters": [1, 2],
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="")
    p.add_argument("--dataset", default="shapes_tune")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--sweep", nargs="+", default=list(GRID), choices=list(GRID))
    p.add_argument("--output", default="")
    p.add_argument("--device", default="cpu")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    a = p.parse_args()

    from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader

    from benchmark import load_model
    from turbo.data import register_shapes
    from turbo.eval import Variant, evaluate_variants

    register_shapes()
    a.score_thresh = None
    cfg, model = load_model(a.config_file, a.weights, a)
    base = model.roi_heads.turbo
    rows = [Variant("baseline (no Soft-NMS, no Turbo)", "m",
                    dataclasses.replace(base, num_iters=0, soft_nms=False)),
            Variant("Soft-NMS only", "m", dataclasses.replace(base, num_iters=0)),
            Variant("configured", "m", base)]
    for key in a.sweep:
        for value in GRID[key]:
            if getattr(base, key) != value:
                rows.append(Variant(f"{key}={value}", "m", dataclasses.replace(base, **{key: value})))
    dicts = DatasetCatalog.get(a.dataset)
    if a.max_images > 0:
        dicts = dicts[: a.max_images]
    loader = build_detection_test_loader(dicts, mapper=DatasetMapper(cfg, False), num_workers=0)
    t0 = time.perf_counter()
    print(f"{len(rows)} variants on {len(dicts)} images of {a.dataset}", flush=True)
    res = evaluate_variants({"m": model}, rows, loader, a.dataset,
                            lambda n: n % 50 == 0 and print(f"  {n} images, "
                                                            f"{time.perf_counter() - t0:.0f} s",
                                                            flush=True))
    order = sorted(rows, key=lambda v: -(res[v.name]["bbox"]["AP"] + res[v.name]["segm"]["AP"]))
    lines = ["| variant | box AP | mask AP | sum |", "|---|---|---|---|"]
    for v in order:
        b, s = res[v.name]["bbox"]["AP"], res[v.name]["segm"]["AP"]
        lines.append(f"| {v.name} | {b:.2f} | {s:.2f} | {b + s:.2f} |")
    text = f"{a.config_file} on {a.dataset} ({len(dicts)} images)\n\n" + "\n".join(lines)
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
