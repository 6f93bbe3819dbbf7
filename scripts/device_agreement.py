#!/usr/bin/env python
"""Whether the shipped models give on a device what they give on the CPU: the baseline and the
default on each model's val images, run on the CPU and on ``--device`` with the same weights,
detection by detection (``turbo.benchmark.agreement``: pairs of detections, their largest box,
score and mask differences) and in COCO AP::

    python scripts/device_agreement.py --device cuda [--images 50] [--models mask_rcnn ...] \
        [--output docs/results/device_agreement.md]

The outputs compared are Detectron2's (boxes and masks in the original image; masks pasted,
which Detectron2 does within the box on a CPU and in the whole image on a GPU). With
``--device cpu`` it compares two CPU runs, which agree exactly.
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import os
import platform
import sys

import torch

from turbo.benchmark.reference_models import REFERENCE_MODELS, REPO_ROOT, reference_model

MODELS = [m for m in REFERENCE_MODELS if m != "panoptic_fpn"]
KINDS = ("baseline", "default")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=50, help="val images per model")
    p.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    p.add_argument("--dataset", default="", help="images of every model (default: its val split)")
    p.add_argument("--output", default="", help="markdown file (default: print only)")
    return p.parse_args(argv)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None):
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog

    from turbo.benchmark.accuracy import evaluate_variants
    from turbo.benchmark.agreement import agreement
    from turbo.benchmark.runner import inference_loader
    from turbo.benchmark.variants import headline_variants
    from turbo.build import load_model, turbo_heads_of
    from turbo.datasets import register_synthetic_datasets

    register_synthetic_datasets()
    runs = {"cpu": "cpu", "device": args.device}
    lines = [
        "`python scripts/device_agreement.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
        + "`",
        "",
        f"{device_name(args.device)} against {device_name('cpu')}, {args.images} images per "
        "model. Detections paired by class and box (each the other's best match, box IoU at least "
        "0.5); differences over the pairs, in the original image; mask IoU of the pasted masks.",
        "",
        "| model | setting | box AP cpu / device | mask AP cpu / device | detections cpu / device "
        "| paired | largest box difference (px) | largest score difference | lowest mask IoU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.models:
        label, config, weights = reference_model(name)
        models, variants = {}, {}
        for run, device in runs.items():
            cfg, models[run] = load_model(config, weights, device)
            heads = turbo_heads_of(models[run])
            rows = headline_variants(run, heads.recipe(), heads.turbo, f"{run}: ", False)
            variants[run] = {v.kind: v for v in rows if v.kind in KINDS}
        dataset = args.dataset or cfg.DATASETS.TEST[0]
        dicts = DatasetCatalog.get(dataset)[: args.images]
        results = evaluate_variants(
            models,
            [variants[run][kind] for run in runs for kind in KINDS],
            inference_loader(cfg, dicts),
            dataset,
            keep_outputs=len(dicts),
        )
        for kind in KINDS:
            cpu, dev = (results[variants[run][kind].name] for run in runs)
            a = agreement(
                [(x["instances"], y["instances"]) for x, y in zip(cpu["outputs"], dev["outputs"])]
            )
            lines.append(
                f"| {label} ({dataset}) | {kind} "
                f"| {cpu['bbox']['AP']:.2f} / {dev['bbox']['AP']:.2f} "
                f"| {cpu['segm']['AP']:.2f} / {dev['segm']['AP']:.2f} "
                f"| {a['detections'][0]} / {a['detections'][1]} | {a['matched']} "
                f"| {a['box_max_px']:.3f} | {a['score_max']:.2e} | {a['mask_iou_min']:.3f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        path = args.output if os.path.isabs(args.output) else os.path.join(REPO_ROOT, args.output)
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
