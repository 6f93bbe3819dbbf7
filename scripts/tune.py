#!/usr/bin/env python
"""Sweep Turbo's settings on a tuning split (never the reported one), one change at a time.

All rows are evaluated in one pass over the images (shared backbone and proposals), each a
change of ``--base`` (the published recipe, the package default, or the config's own
parameters). Two grids: ``thresholds`` (the recipe keys and cycles) and ``mechanisms``
(how many masks are re-predicted, fusion of the earlier mask, the re-prediction box's scale,
Maskness source, agreement rescoring, mask edge).
Prints a table sorted by box AP + mask AP and writes it to ``--output``::

    python scripts/tune.py --config-file configs/shapes/turbo_mask_rcnn_R18_FPN.yaml \\
        --weights checkpoints/shapes_mask_rcnn_R18_FPN.pth --dataset shapes_tune --grid mechanisms
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

GRIDS = {
    "thresholds": {
        "box_thresh": [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5],
        "maskness_thresh": [0.2, 0.35, 0.5, 0.65],
        "maskness_weight": [0.0, 0.2, 0.35, 0.5, 0.75, 1.0],
        "box_fusion": [0.0, 0.25, 0.5, 0.75],
        "num_iters": [1, 2],
    },
    "mechanisms": {
        "repredict_topk": [5, 10, 12, 15, 20, 40],
        "maskness_source": ["first", "both"],
        "mask_edge": ["probability", "half_interior"],
        "num_iters": [1, 2],
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help='"" keeps the config\'s weights')
    p.add_argument("--dataset", default="shapes_tune")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--grid", choices=list(GRIDS), default="thresholds")
    p.add_argument(
        "--sweep",
        nargs="*",
        default=None,
        help="keys of the grid to sweep (default: all of them; none with an empty list)",
    )
    p.add_argument("--base", choices=["published", "default", "config"], default="config")
    p.add_argument(
        "--pairs",
        nargs="*",
        default=[],
        metavar="KEY=VALUE,KEY=VALUE",
        help="extra rows, each a comma-separated set of changes of the base",
    )
    p.add_argument("--score-thresh", type=float, default=None)
    p.add_argument(
        "--score-pr",
        type=float,
        nargs="*",
        default=[],
        metavar="SCORE",
        help="also precision and recall of the detections above these scores (e.g. 0.3 0.5 0.7)",
    )
    p.add_argument("--output", default="")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def main(argv=None):
    a = parse_args(argv)
    from detectron2.data import DatasetCatalog
    from detectron2.utils.logger import setup_logger

    from turbo.benchmark.accuracy import evaluate_variants
    from turbo.benchmark.breakdown import add_precision_recall
    from turbo.benchmark.progress import Progress
    from turbo.benchmark.report import score_threshold_table
    from turbo.benchmark.runner import inference_loader, set_score_thresh
    from turbo.benchmark.variants import PUBLISHED, Variant, sweep_variants
    from turbo.build import load_model
    from turbo.config import TurboParams
    from turbo.datasets import register_synthetic_datasets

    setup_logger(name="turbo", abbrev_name="turbo")  # progress lines
    register_synthetic_datasets()
    cfg, model = load_model(a.config_file, a.weights or None, a.device, a.opts)
    if a.score_thresh is not None:
        set_score_thresh(model, a.score_thresh)
    heads = model.roi_heads
    recipe = heads.recipe()
    base = {
        "published": PUBLISHED.resolved(recipe),
        "default": TurboParams().resolved(recipe),
        "config": heads.turbo,
    }[a.base]
    off = {"enabled": False}
    rows = [
        Variant("baseline (no Soft-NMS, no Turbo)", "m", base.replace(num_iters=0, soft_nms=off)),
        Variant("Soft-NMS only", "m", base.replace(num_iters=0)),
        Variant(f"{a.base}", "m", base),
    ]
    grid = GRIDS[a.grid]
    for key in list(grid) if a.sweep is None else a.sweep:
        rows += sweep_variants("m", base, [{key: v} for v in grid[key]], label=f"{a.base}, ")
    for pair in a.pairs:
        change = dict((k, _value(v)) for k, v in (kv.split("=") for kv in pair.split(",")))
        rows += sweep_variants("m", base, [change], label=f"{a.base}, ")
    rows = list({v.params: v for v in reversed(rows)}.values())[::-1]  # one row per setting
    dicts = DatasetCatalog.get(a.dataset)
    if a.max_images > 0:
        dicts = dicts[: a.max_images]
    t0 = time.perf_counter()
    print(f"{len(rows)} variants on {len(dicts)} images of {a.dataset}", flush=True)
    res = evaluate_variants(
        {"m": model},
        rows,
        inference_loader(cfg, dicts),
        a.dataset,
        Progress("tune", len(dicts)),
        keep_predictions=bool(a.score_pr),
    )
    order = sorted(rows, key=lambda v: -(res[v.name]["bbox"]["AP"] + res[v.name]["segm"]["AP"]))
    lines = ["| variant | box AP | mask AP | sum |", "|---|---|---|---|"]
    for v in order:
        b, s = res[v.name]["bbox"]["AP"], res[v.name]["segm"]["AP"]
        lines.append(f"| {v.name} | {b:.2f} | {s:.2f} | {b + s:.2f} |")
    if a.score_pr:
        add_precision_recall(res, a.dataset, a.score_pr, [d["image_id"] for d in dicts])
        lines += [
            "",
            "Detections kept above a score: precision / recall (%), a true positive matched at "
            "IoU 0.5 as COCO AP matches it",
            "",
            score_threshold_table(order, res),
        ]
    command = " ".join(sys.argv[1:] if argv is None else argv)
    text = (
        f"`python scripts/tune.py {command}`\n\n"
        f"{a.config_file} on {a.dataset} ({len(dicts)} images, "
        f"{time.perf_counter() - t0:.0f} s)\n\n" + "\n".join(lines)
    )
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
