#!/usr/bin/env python
"""Fit the score map of a model with Turbo-Inference on unlabelled images, so that a fixed
score threshold keeps about as many detections as the model keeps without Turbo.

Maskness rescoring lowers every score; ``MODEL.TURBO.SCORE_MAP`` maps the rescored scores
back by a strictly increasing map (no order, so no AP, changes). ``--per-class`` fits one map
per class instead: each class's threshold keeps as many of its detections as without Turbo,
and no order within a class (so no COCO AP, which is computed per class) changes; a class
with few detections on these images takes the map of all classes
(``turbo.score_map.CLASS_MIN_DETECTIONS``), and so does every class below a score level
(``--own-from``, default ``turbo.score_map.CLASS_OWN_FROM``). Each head's recipe carries a
map for its own rescoring; fit one here for your model, or for parameters other than the
recipe's (``MASKNESS_WEIGHT``, ...). Only the images are read: no annotations are needed::

    python projects/turbo/fit_score_map.py \\
        --config-file configs/COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml \\
        --input "my_images/*.jpg" --max-images 1000

or ``--dataset NAME`` for the images of a registered Detectron2 dataset. It prints the map
as yacs lines and as a LazyConfig line, to paste into the config.
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import glob
import json
import sys

from detectron2.utils.logger import setup_logger


def get_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="yacs or LazyConfig")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="images, or glob patterns of images")
    src.add_argument("--dataset", help="a registered dataset, whose images are read")
    p.add_argument("--max-images", type=int, default=0, help="at most so many images; 0 = all")
    p.add_argument("--weights", default="", help="default: the config's")
    p.add_argument("--per-class", action="store_true", help="one map per class")
    p.add_argument(
        "--own-from",
        type=float,
        default=None,
        metavar="LEVEL",
        help="with --per-class: each class's own knots from this score level up, in [0, 1), "
        "below it the map of all classes (default turbo.score_map.CLASS_OWN_FROM; 0: its own "
        "at every level)",
    )
    p.add_argument("--device", default=None, help="default: the config's (CPU without CUDA)")
    p.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE pairs (yacs) or key=value (LazyConfig)",
    )
    return p


def image_dicts(args):
    """Detectron2 dataset dicts of the images to fit on (file name and id only)."""
    if args.dataset:
        from detectron2.data import DatasetCatalog

        from turbo.datasets import register_synthetic_datasets

        register_synthetic_datasets()
        files = [d["file_name"] for d in DatasetCatalog.get(args.dataset)]
    else:
        files = []
        for pattern in args.input:
            found = sorted(glob.glob(pattern))
            if not found:
                raise SystemExit(f"--input {pattern!r} matches no file")
            files += found
    if args.max_images > 0:
        files = files[: args.max_images]
    if not files:
        raise SystemExit("no image to fit on")
    return [{"file_name": f, "image_id": i} for i, f in enumerate(files)]


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="turbo", abbrev_name="turbo")
    from turbo.benchmark.runner import inference_loader
    from turbo.build import is_lazy_config, load_model, turbo_heads_of
    from turbo.config import is_class_score_map
    from turbo.score_map import CLASS_OWN_FROM, fit_model_score_map

    if args.own_from is not None:
        if not args.per_class:
            raise SystemExit("--own-from places each class's own knots: it needs --per-class")
        if not 0.0 <= args.own_from < 1.0:
            raise SystemExit(f"--own-from must lie in [0, 1), got {args.own_from}")
    cfg, model = load_model(args.config_file, args.weights or None, args.device, args.opts)
    turbo_heads_of(model)
    dicts = image_dicts(args)
    knots = fit_model_score_map(
        model,
        inference_loader(cfg, dicts),
        per_class=args.per_class,
        own_from=CLASS_OWN_FROM if args.own_from is None else args.own_from,
    )
    if is_class_score_map(knots):
        listed = json.dumps([[list(k) for k in m] for m in knots])
        yacs = "\n".join(
            ["    SCORE_MAP:  # one map per class, class 0 first"]
            + [f"    - {json.dumps([list(k) for k in m])}" for m in knots]
        )
        print(f"fitted on {len(dicts)} images ({len(knots)} classes' maps):")
    else:
        listed = json.dumps([list(k) for k in knots])
        yacs = f"    SCORE_MAP: {listed}"
        print(f"fitted on {len(dicts)} images ({len(knots)} knots):")
    print(f"  yacs (MODEL.TURBO):\n{yacs}")
    print(f"  LazyConfig: model.roi_heads.turbo.score_map = {listed}")
    if is_lazy_config(args.config_file):
        print(f"  or use_turbo(model, ..., score_map={listed})")
    return knots


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
