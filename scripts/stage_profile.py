#!/usr/bin/env python
"""Where one inference spends its time, per stage, for the baseline and for Turbo's default.

On a shipped shapes model, a shipped scenes model and a Mask R-CNN R50-FPN at 800x1333 with
random weights (100 detections per image; nothing can be downloaded here, and a mask head
costs what a trained one costs), each stage of ``turbo.benchmark.stage_profile`` in ms per image
(median over repeats, mean over images), the two alternating, and the split of Turbo's extra
time into the mask head's second pass, Soft-NMS's extra detections, and Turbo's own code::

    python scripts/stage_profile.py [--device cuda] [--images 8] [--repeats 5] \
        [--output docs/results/profile.md]
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
import sys

import torch

from turbo.benchmark.reference_models import REPO_ROOT, reference_model

R50 = "configs/COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=8, help="val images per shipped model")
    p.add_argument("--r50-images", type=int, default=2, help="random 800x1333 images")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="*", default=["mask_rcnn", "scenes_mask_rcnn", "r50"])
    p.add_argument(
        "--dataset", default="", help="images of the shipped models (default: each one's val split)"
    )
    p.add_argument("--output", default="", help="markdown file (default: print only)")
    return p.parse_args(argv)


def _inputs(name, args):
    """(label, model, batches) of one profiled model."""
    from detectron2.data import DatasetCatalog

    from turbo.benchmark.runner import inference_loader
    from turbo.build import load_model

    if name == "r50":
        from turbo.benchmark.synthetic import random_model

        model = random_model(os.path.join(REPO_ROOT, R50), args.device)
        g = torch.Generator().manual_seed(0)
        batches = [
            [{"image": (torch.rand(3, 800, 1333, generator=g) * 255).to(args.device)}]
            for _ in range(args.r50_images)
        ]
        return "Mask R-CNN R50-FPN, 800x1333, random weights, 100 dets/img", model, batches
    label, config, weights = reference_model(name)
    cfg, model = load_model(config, weights, args.device)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    dicts = DatasetCatalog.get(dataset)[: args.images]
    return (
        f"{label} ({os.path.basename(config)}), {dataset}",
        model,
        list(inference_loader(cfg, dicts)),
    )


def main(argv=None):
    args = parse_args(argv)
    from turbo.benchmark.stage_profile import profile_stages, profile_table
    from turbo.datasets import register_synthetic_datasets

    register_synthetic_datasets()
    threads = torch.get_num_threads()
    lines = [
        "`python scripts/stage_profile.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "",
        f"device: {args.device} ({threads} threads); the default's parameters, ms per image: "
        f"median of {args.repeats} rounds per image, mean over the images",
    ]
    for name in args.models:
        label, model, batches = _inputs(name, args)
        result = profile_stages(model, batches, repeats=args.repeats)
        lines += ["", f"## {label}", "", profile_table(result)]
        print("\n".join(lines[-4:]), flush=True)
    lines[0] = lines[0].rstrip() + "`"
    text = "\n".join(lines) + "\n"
    if args.output:
        with open(
            os.path.join(REPO_ROOT, args.output) if not os.path.isabs(args.output) else args.output,
            "w",
        ) as f:
            f.write(text)


if __name__ == "__main__":
    main()
