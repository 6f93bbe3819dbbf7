#!/usr/bin/env python
"""Baseline against Turbo-Inference, side by side, in one run on the same images.

For each model: baseline, + Soft-NMS, + Turbo, + Turbo + Soft-NMS (the package defaults) and
the published recipe; with ``--full`` also the config's own parameters where they differ, more
cycles, and each mechanism one at a time. For each row: COCO box and mask AP, AP50, AP75
(``COCOEvaluator``), detections per image and latency relative to the model's baseline
(whole-model calls on the same image one after another, warm-up first: the median over
repeats and images of each call's ratio to the baseline's call).

Defaults evaluate the shipped shapes reference checkpoints on ``shapes_val`` (generated on
first use)::

    python scripts/benchmark.py

Any registered dataset, config (yacs or LazyConfig) and weights work, e.g. COCO::

    python scripts/benchmark.py --dataset coco_2017_val --model "R50-FPN 3x" \\
        configs/COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml ""

(``""`` keeps the config's weights.) Writes ``benchmark.md``, ``benchmark.json``,
``benchmark.log``, ``ap_vs_latency.png`` (when timed; ``ap_vs_cycles.png`` with ``--full``) and
``examples.png`` to ``--output-dir``. With ``--score-pr``, each variant's precision and recall
above the scores, and their differences from its model's baseline with each difference's
standard deviation over the images.
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
import time

import torch

from turbo.benchmark.reference_models import REFERENCE_MODELS, REPO_ROOT
from turbo.datasets import register_synthetic_datasets

DEFAULT_MODELS = ["mask_rcnn", "cascade"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--model",
        nargs=3,
        action="append",
        metavar=("LABEL", "CONFIG", "WEIGHTS"),
        help="a model to evaluate (repeatable); default: the shipped " + ", ".join(DEFAULT_MODELS),
    )
    p.add_argument(
        "--reference",
        nargs="+",
        choices=list(REFERENCE_MODELS),
        default=None,
        help="shipped reference models to evaluate (default: {})".format(", ".join(DEFAULT_MODELS)),
    )
    p.add_argument("--dataset", default="shapes_val", help="a registered dataset name")
    p.add_argument("--max-images", type=int, default=0, help="0 = the whole dataset")
    p.add_argument(
        "--full",
        action="store_true",
        help="also the config's own parameters, more cycles, and each mechanism one at a time",
    )
    p.add_argument(
        "--cycles", type=int, nargs="+", default=[2, 3], help="cycle counts of the full sweep"
    )
    p.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="box head test score threshold (e.g. 0: 100 detections per image)",
    )
    p.add_argument(
        "--score-pr",
        type=float,
        nargs="*",
        default=[],
        metavar="SCORE",
        help="also precision and recall of the detections above these scores (e.g. 0.3 0.5 0.7)",
    )
    p.add_argument(
        "--latency-images",
        type=int,
        default=8,
        help="images timed (0: no timing, accuracy and precision / recall alone)",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pictures", type=int, default=4, help="images in examples.png")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output-dir", default=os.path.join("output", "benchmark"))
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides for every model (yacs KEY VALUE or LazyConfig key=value)",
    )
    args = p.parse_args(argv)
    if args.latency_images < 0:
        p.error(f"--latency-images must be 0 (no timing) or more, got {args.latency_images}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger

    from turbo.benchmark import plots
    from turbo.benchmark.accuracy import evaluate_variants
    from turbo.benchmark.breakdown import add_precision_recall
    from turbo.benchmark.progress import Progress
    from turbo.benchmark.report import (
        markdown_table,
        model_baselines,
        relative_latency,
        results_json,
        score_threshold_table,
    )
    from turbo.benchmark.runner import inference_loader, set_score_thresh
    from turbo.benchmark.timing import latency_samples
    from turbo.benchmark.variants import full_sweep_variants, headline_variants
    from turbo.build import load_model, turbo_heads_of

    os.makedirs(args.output_dir, exist_ok=True)
    log = setup_logger(
        output=os.path.join(args.output_dir, "benchmark.log"), name="turbo", abbrev_name="turbo"
    )
    t0 = time.perf_counter()
    register_synthetic_datasets()

    specs = [tuple(m) for m in args.model or []]
    for name in args.reference or ([] if specs else DEFAULT_MODELS):
        label, cfg_file, weights = REFERENCE_MODELS[name]
        specs.append((label, os.path.join(REPO_ROOT, cfg_file), os.path.join(REPO_ROOT, weights)))
    models, cfgs, rows = {}, {}, []
    for i, (label, cfg_file, weights) in enumerate(specs):
        cfg, model = load_model(cfg_file, weights or None, args.device, args.opts)
        if args.score_thresh is not None:
            set_score_thresh(model, args.score_thresh)
        models[label], cfgs[label] = model, cfg
        heads = turbo_heads_of(model)
        prefix = "" if i == 0 else f"{label}: "
        # the config's own score map serves the default rows; its own parameters (e.g.
        # thresholds tuned for a dataset) are a full-sweep row
        rows += headline_variants(label, heads.recipe(), heads.turbo, prefix, args.full)
        if args.full:
            rows += full_sweep_variants(label, heads.recipe(), prefix, args.cycles, heads.turbo)

    log.info("loading %s (generated on first use) ...", args.dataset)
    dicts = DatasetCatalog.get(args.dataset)
    n_images = len(dicts) if args.max_images <= 0 else min(args.max_images, len(dicts))
    first_cfg = cfgs[specs[0][0]]
    log.info(
        "evaluating %d variants of %d model(s) on %d images of %s (%s)",
        len(rows),
        len(models),
        n_images,
        args.dataset,
        args.device,
    )
    results = evaluate_variants(
        models,
        rows,
        inference_loader(first_cfg, dicts[:n_images]),
        args.dataset,
        Progress("accuracy", n_images, logger=log),
        keep_outputs=args.pictures,
        keep_predictions=bool(args.score_pr),
    )
    if args.score_pr:
        ids = [d["image_id"] for d in dicts[:n_images]]
        add_precision_recall(
            results, args.dataset, args.score_pr, ids, reference=model_baselines(rows)
        )
    lat_dicts = dicts[: args.latency_images]
    lat_batches = list(inference_loader(first_cfg, lat_dicts)) if lat_dicts else []
    samples = {}
    if lat_batches:
        log.info(
            "timing %d variants on %d images x %d repeats",
            len(rows),
            len(lat_batches),
            args.repeats,
        )
        samples = latency_samples(
            models,
            rows,
            lat_batches,
            repeats=args.repeats,
            progress=Progress("latency", args.repeats, "repeats", logger=log),
        )

    threads = f" ({torch.get_num_threads()} threads)" if args.device == "cpu" else ""
    timing = (
        f"latency: {args.repeats} x {len(lat_batches)} single-image calls, x baseline: median "
        "of per-call ratios, ms/img: median"
        if samples
        else "latency: not timed (--latency-images 0)"
    )
    where = f"{args.dataset}, {n_images} images, device {args.device}{threads}"
    header = f"{where}, {timing}"
    table = markdown_table(rows, results, samples)
    if args.score_pr:
        table += (
            "\n\nDetections kept above a score: precision / recall (%), a true positive "
            "matched at IoU 0.5 as COCO AP matches it\n\n" + score_threshold_table(rows, results)
        )
    command = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with open(os.path.join(args.output_dir, "benchmark.md"), "w") as f:
        f.write(f"`{command.strip()}`\n\n{header}\n\n{table}\n")
    with open(os.path.join(args.output_dir, "benchmark.json"), "w") as f:
        f.write(
            results_json(
                rows,
                results,
                samples,
                dataset=args.dataset,
                images=n_images,
                device=args.device,
                command=command.strip(),
            )
        )

    if samples:
        rel = relative_latency(rows, samples)
        series = {
            m: [
                (
                    v.label,
                    rel[v.name],
                    results[v.name]["bbox"]["AP"],
                    results[v.name]["segm"]["AP"],
                )
                for v in rows
                if v.model == m
            ]
            for m in models
        }
        plots.plot_ap_vs_latency(
            series,
            os.path.join(args.output_dir, "ap_vs_latency.png"),
            where,
        )
    if args.full:
        cycles = {
            m: [
                (
                    0 if v.kind == "soft_nms" else v.params.num_iters,
                    results[v.name]["bbox"]["AP"],
                    results[v.name]["segm"]["AP"],
                )
                for v in rows
                if v.model == m and v.kind in ("soft_nms", "default", "cycles")
            ]
            for m in models
        }
        plots.plot_ap_vs_cycles(cycles, os.path.join(args.output_dir, "ap_vs_cycles.png"))
    if args.pictures:
        _examples(rows, results, MetadataCatalog.get(args.dataset), args.output_dir)
    print(f"\n{header}\n\n{table}\n", flush=True)
    log.info(
        "wrote %s/benchmark.{md,json,log}, figures, in %.0f s",
        args.output_dir,
        time.perf_counter() - t0,
    )
    return results


def _examples(rows, results, metadata, out_dir):
    """examples.png: the first model's baseline | default Turbo on the first images, the
    Turbo side showing its detection-stage boxes dashed, each image above close-ups of the
    objects Turbo changed most."""
    import numpy as np
    from detectron2.data.detection_utils import read_image
    from PIL import Image

    from turbo.visualization import changed_crops, side_by_side

    model = rows[0].model
    pick = {v.kind: v.name for v in rows if v.model == model}
    base, turbo, stage = (results[pick[k]]["outputs"] for k in ("baseline", "default", "soft_nms"))
    names = metadata.get("thing_classes")
    tiles = []
    for b, t, s in zip(base, turbo, stage):
        image = read_image(b["input"]["file_name"], format="RGB")
        inst = s["instances"]
        tiles.append(
            side_by_side(
                image,
                b["instances"],
                t["instances"],
                names,
                right_extra_boxes=inst[inst.scores > 0.5].pred_boxes.tensor.numpy(),
            )
        )
        crops = changed_crops(image, b["instances"], t["instances"], names, size=160)
        if crops is not None:
            tiles.append(crops[:, : tiles[-1].shape[1]])
    if tiles:
        width = max(t.shape[1] for t in tiles)
        tiles = [
            np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles
        ]
        gap = np.full((8, width, 3), 255, dtype=np.uint8)
        grid = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=0)
        Image.fromarray(grid).save(os.path.join(out_dir, "examples.png"))


if __name__ == "__main__":
    main()
