#!/usr/bin/env python
"""Panoptic FPN with Turbo: PQ / SQ / RQ by Turbo setting and instance threshold of the merge.

Rows: the baseline (Detectron2's own inference), Turbo (the config's parameters) and Turbo
merged on the scores before Maskness rescoring (``turbo.benchmark.panoptic.SETTINGS``), each
merged at every ``--thresholds`` value (``MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH``;
the model runs once per setting and dataset). For each dataset: PQ, SQ, RQ of all, things and
stuff (``COCOPanopticEvaluator``), thing segments kept per image, and the box / mask AP of each
setting's instances. The first dataset chooses, for each setting, its threshold of best PQ
(marked ``*`` in every table). Defaults: the shipped Panoptic FPN, threshold
chosen on ``shapes_panoptic_tune``, measured on ``shapes_panoptic_val`` (both generated on
first use)::

    python scripts/panoptic_merge.py --output docs/results/panoptic.json
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
import sys
import time

import torch

from turbo.benchmark.panoptic import SETTINGS
from turbo.benchmark.reference_models import REPO_ROOT

DEFAULT_CONFIG = "configs/shapes/turbo_panoptic_fpn_R18_FPN.yaml"
DEFAULT_WEIGHTS = "checkpoints/shapes_panoptic_fpn_R18_FPN.pth"
DEFAULT_DATASETS = ["shapes_panoptic_tune_separated", "shapes_panoptic_val_separated"]
DEFAULT_THRESHOLDS = [0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.3, 0.2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--config-file", default=os.path.join(REPO_ROOT, DEFAULT_CONFIG))
    p.add_argument(
        "--weights",
        default=os.path.join(REPO_ROOT, DEFAULT_WEIGHTS),
        help='"" keeps the config\'s weights',
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=DEFAULT_DATASETS,
        help="registered panoptic datasets; the first chooses each setting's threshold",
    )
    p.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS)
    p.add_argument(
        "--settings",
        nargs="+",
        choices=list(SETTINGS),
        default=list(SETTINGS),
        help="Turbo settings to measure (default: all)",
    )
    p.add_argument("--output", default="", help="also write the results here (json)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="trailing config KEY VALUE pairs")
    return p.parse_args(argv)


def table(results: dict, chosen: dict) -> str:
    """A markdown table of one dataset's ``evaluate_merge`` results; ``chosen``: setting ->
    its threshold, marked ``*``."""
    lines = [
        "| setting | thresh | PQ | SQ | RQ | PQ th | SQ th | RQ th | PQ st | SQ st | RQ st "
        "| things / image | box AP | mask AP |",
        "|---|---|" + "---|" * 12,
    ]
    for name, r in results.items():
        for t, m in r["merge"].items():
            mark = "*" if chosen.get(name) == t else ""
            cells = [f"{m[k]:.2f}" for k in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th")]
            cells += [f"{m[k]:.2f}" for k in ("PQ_st", "SQ_st", "RQ_st")]
            ap = [f"{r['bbox']['AP']:.2f}", f"{r['segm']['AP']:.2f}"]
            lines.append(
                f"| {name} | {t:g}{mark} | "
                + " | ".join(cells)
                + f" | {m['things_per_image']:.2f} | "
                + " | ".join(ap)
                + " |"
            )
    return "\n".join(lines)


def main(argv=None):
    a = parse_args(argv)
    from detectron2.data import DatasetCatalog
    from detectron2.utils.logger import setup_logger

    from turbo.benchmark.panoptic import evaluate_merge
    from turbo.benchmark.runner import inference_loader
    from turbo.build import load_model
    from turbo.datasets import register_synthetic_datasets

    setup_logger(name="turbo")
    register_synthetic_datasets()
    cfg, model = load_model(a.config_file, a.weights or None, a.device, a.opts)
    chosen: dict = {}
    everything = {}
    for k, dataset in enumerate(a.datasets):
        dicts = DatasetCatalog.get(dataset)  # all of it: PQ is scored on every image

        def progress(name, done, total=len(dicts), dataset=dataset):
            if done == total or done % 50 == 0:
                print(f"{dataset}: {name}: {done}/{total} images", file=sys.stderr, flush=True)

        start = time.perf_counter()
        results = evaluate_merge(
            model,
            inference_loader(cfg, dicts),
            dataset,
            a.thresholds,
            {name: SETTINGS[name] for name in a.settings},
            progress,
        )
        seconds = time.perf_counter() - start
        if k == 0:
            chosen = {
                n: max(r["merge"], key=lambda t, r=r: r["merge"][t]["PQ"])
                for n, r in results.items()
            }
        print(f"\n{dataset} ({len(dicts)} images, device {a.device}, {seconds:.0f} s)\n")
        print(table(results, chosen))
        everything[dataset] = results
    print(
        f"\nthreshold of best PQ on {a.datasets[0]}: "
        + ", ".join(f"{n} {t:g}" for n, t in chosen.items())
    )
    if a.output:
        with open(a.output, "w") as f:
            json.dump(
                {"chosen_on": a.datasets[0], "chosen": chosen, "results": everything}, f, indent=1
            )
    return everything


if __name__ == "__main__":
    main()
