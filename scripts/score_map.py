#!/usr/bin/env python
"""Scores a user can threshold: a score map fitted with no labels, measured on the shipped
models.

For each reference model: the map (``turbo.score_map.fit_score_map``) is fitted on the images
of its domain's tuning split, read as unlabelled images (the baseline's and Turbo's scores
only); then, on the model's validation split, box and mask AP and precision / recall above
each ``--thresholds`` score (IoU 0.5, pycocotools' matching) of the baseline, the package
default, and the default with the map, whose scores are the default's mapped and kept above
the score threshold (what the heads return with ``MODEL.TURBO.SCORE_MAP`` set)::

    python scripts/score_map.py --output docs/results/score_map.md
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

from turbo.benchmark.reference_models import REFERENCE_MODELS

# the domain's tuning split of each reference model's validation split
FIT_SPLIT = {"shapes_val": "shapes_tune", "scenes_val": "scenes_tune"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--reference",
        nargs="+",
        default=[n for n in REFERENCE_MODELS if n != "panoptic_fpn"],  # the instance models
    )
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--max-images", type=int, default=0, help="per split; 0 = all")
    p.add_argument("--output", default="")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger

    from turbo.benchmark.accuracy import evaluate_variants
    from turbo.benchmark.breakdown import ap_on_images, load_coco_gt, precision_recall
    from turbo.benchmark.reference_models import reference_model
    from turbo.benchmark.runner import inference_loader
    from turbo.benchmark.variants import Variant
    from turbo.build import load_model
    from turbo.config import TurboParams
    from turbo.datasets import register_synthetic_datasets
    from turbo.ops import piecewise_linear
    from turbo.score_map import collect_scores, fit_score_map

    log = setup_logger(name="turbo", abbrev_name="turbo")
    register_synthetic_datasets()
    t0 = time.perf_counter()
    ts = a.thresholds
    head = (
        "| model (val split) | setting | box AP | mask AP | "
        + " | ".join(f"box P / R @ {t:g}" for t in ts)
        + " | "
        + " | ".join(f"mask P / R @ {t:g}" for t in ts)
        + " |"
    )
    lines = [head, "|" + "---|" * (4 + 2 * len(ts))]
    maps = []
    for name in a.reference:
        label, config, weights = reference_model(name)
        cfg, model = load_model(config, weights, a.device)
        val = cfg.DATASETS.TEST[0]
        fit = FIT_SPLIT[val]

        def dicts(split):
            d = DatasetCatalog.get(split)
            return d[: a.max_images] if a.max_images > 0 else d

        heads = model.roi_heads
        default = TurboParams().resolved(heads.recipe())
        with heads.turbo_params(default):
            knots = fit_score_map(*collect_scores(model, inference_loader(cfg, dicts(fit))))
        maps.append(f"- {label}: fitted on {fit}: `{[list(k) for k in knots]}`")
        log.info("%s: score map fitted on %s, %d knots", label, fit, len(knots))
        off = {"enabled": False}
        rows = [
            Variant("baseline", "m", default.replace(num_iters=0, soft_nms=off), "baseline"),
            Variant("default", "m", default, "default"),
        ]
        res = evaluate_variants(
            {"m": model}, rows, inference_loader(cfg, dicts(val)), val, keep_predictions=True
        )
        gt = load_coco_gt(MetadataCatalog.get(val).json_file)
        ids = [d["image_id"] for d in dicts(val)]
        thresh = heads.final_box_predictor().test_score_thresh
        preds = {v.name: res[v.name]["predictions"] for v in rows}
        mapped = []
        scores = torch.tensor([p["score"] for p in preds["default"]])
        for p, s in zip(preds["default"], piecewise_linear(scores, knots).tolist()):
            if s > thresh:
                mapped.append({**p, "score": s})
        preds["default + score map"] = mapped
        for setting, pr in preds.items():
            cells = []
            for task in ("bbox", "segm"):
                got = precision_recall(gt, pr, task, ts, img_ids=ids)
                cells += [f"{got[t][0]:.1f} / {got[t][1]:.1f}" for t in ts]
            box, mask = (ap_on_images(gt, pr, task, ids) for task in ("bbox", "segm"))
            lines.append(
                f"| {label} ({val}) | {setting} | {box:.2f} | {mask:.2f} | "
                + " | ".join(cells)
                + " |"
            )
        log.info("%s done (%.0f s)", label, time.perf_counter() - t0)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(
        [
            f"`python scripts/score_map.py {command}`".replace(" `", "`"),
            "",
            f"Device {a.device}, {time.perf_counter() - t0:.0f} s. Precision / recall (%) of the "
            "detections kept above each score, a true positive matched at IoU 0.5 as COCO AP "
            "matches it; the score map fitted on the tuning split's images (no labels read), "
            "applied to the default's scores, which are then kept above the score threshold.",
            "",
            *lines,
            "",
            "The maps (knots (x, y): Turbo's score x is mapped to y):",
            "",
            *maps,
            "",
        ]
    )
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
