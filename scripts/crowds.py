#!/usr/bin/env python
"""Turbo in crowded images: AP and latency by the number of objects per image, side by side.

Rows: the baseline, the package default, the published recipe (where it differs from the
default) and the default re-predicting the masks of each image's top k detections only
(``--topk``; 0 = every mask). For each bucket
of images by their number of annotated objects (``--buckets`` edges): box and mask AP on
those images alone (pycocotools, one evaluation pass over the whole split shared by all
buckets) and latency relative to the baseline (whole-model calls, warm-up first, median of
per-call ratios on ``--latency-images`` images of the bucket)::

    python scripts/crowds.py --config-file configs/scenes/turbo_mask_rcnn_R18_FPN.yaml \\
        --weights checkpoints/scenes_mask_rcnn_R18_FPN.pth --dataset scenes_crowd_val
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import sys
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help='"" keeps the config\'s weights')
    p.add_argument("--dataset", default="scenes_crowd_val")
    p.add_argument(
        "--buckets",
        type=int,
        nargs="+",
        default=[30, 45, 60, 81],
        help="bucket edges: objects per image in [a, b) for consecutive edges a, b",
    )
    p.add_argument("--max-images", type=int, default=0, help="0 = the whole dataset")
    p.add_argument("--topk", type=int, nargs="*", default=[0, 15, 30])
    p.add_argument("--latency-images", type=int, default=3, help="per bucket")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default="")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if len(a.buckets) < 2 or sorted(a.buckets) != a.buckets:
        raise SystemExit(f"--buckets must be at least two increasing edges, got {a.buckets}")
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger

    from turbo.benchmark.accuracy import evaluate_variants
    from turbo.benchmark.breakdown import ap_on_images, load_coco_gt, objects_per_image
    from turbo.benchmark.progress import Progress
    from turbo.benchmark.report import relative_latency
    from turbo.benchmark.runner import inference_loader
    from turbo.benchmark.timing import latency_samples
    from turbo.benchmark.variants import PUBLISHED, Variant
    from turbo.build import load_model
    from turbo.config import TurboParams
    from turbo.datasets import register_synthetic_datasets

    log = setup_logger(name="turbo", abbrev_name="turbo")
    register_synthetic_datasets()
    cfg, model = load_model(a.config_file, a.weights or None, a.device, a.opts)
    recipe = model.roi_heads.recipe()
    default = TurboParams().resolved(recipe)
    published = PUBLISHED.resolved(recipe)
    same = "= published recipe, " if default == published else ""
    rows = [
        Variant("baseline", "m", default.replace(num_iters=0, soft_nms={"enabled": False})),
        Variant(f"default ({same}repredict_topk={default.repredict_topk})", "m", default),
        Variant("published recipe", "m", published),
    ]
    for k in a.topk:
        rows.append(Variant(f"default, repredict_topk={k}", "m", default.replace(repredict_topk=k)))
    rows = list({v.params: v for v in reversed(rows)}.values())[::-1]  # one row per setting

    t0 = time.perf_counter()
    dicts = DatasetCatalog.get(a.dataset)
    if a.max_images > 0:
        dicts = dicts[: a.max_images]
    gt = load_coco_gt(MetadataCatalog.get(a.dataset).json_file)
    objects = objects_per_image(gt)
    edges = list(zip(a.buckets[:-1], a.buckets[1:]))
    buckets = {
        (lo, hi): [d["image_id"] for d in dicts if lo <= objects[d["image_id"]] < hi]
        for lo, hi in edges
    }
    log.info("%d variants on %d images of %s", len(rows), len(dicts), a.dataset)
    res = evaluate_variants(
        {"m": model},
        rows,
        inference_loader(cfg, dicts),
        a.dataset,
        Progress("accuracy", len(dicts), logger=log),
        keep_predictions=True,
    )
    by_id = {d["image_id"]: d for d in dicts}
    cells = {v.name: [] for v in rows}
    for (lo, hi), ids in buckets.items():
        lat = {}
        if ids and a.latency_images > 0:
            batches = list(inference_loader(cfg, [by_id[i] for i in ids[: a.latency_images]]))
            lat = relative_latency(rows, latency_samples({"m": model}, rows, batches, a.repeats))
        for v in rows:
            preds = res[v.name]["predictions"]
            box = ap_on_images(gt, preds, "bbox", ids) if ids else float("nan")
            mask = ap_on_images(gt, preds, "segm", ids) if ids else float("nan")
            x = f"{lat[v.name]:.2f}" if v.name in lat else "n/a"
            cells[v.name].append(f"{box:.2f} / {mask:.2f} / {x}")
        log.info("bucket %d-%d objects: %d images", lo, hi - 1, len(ids))

    head = [f"{lo}-{hi - 1} objects ({len(buckets[(lo, hi)])} img)" for lo, hi in edges]
    lines = [
        "| variant | all: box AP / mask AP | " + " | ".join(head) + " |",
        "|" + "---|" * (2 + len(head)),
    ]
    for v in rows:
        r = res[v.name]
        lines.append(
            f"| {v.name} | {r['bbox']['AP']:.2f} / {r['segm']['AP']:.2f} | "
            + " | ".join(cells[v.name])
            + " |"
        )
    command = " ".join(sys.argv[1:] if argv is None else argv)
    text = (
        f"`python scripts/crowds.py {command}`\n\n"
        f"{a.config_file} on {a.dataset} ({len(dicts)} images, device {a.device}, "
        f"{time.perf_counter() - t0:.0f} s). Per bucket: box AP / mask AP / latency (x "
        f"baseline, median of per-call ratios, {a.repeats} x up to {a.latency_images} images)"
        "\n\n" + "\n".join(lines)
    )
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
