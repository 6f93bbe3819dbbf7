#!/usr/bin/env python
"""Baseline against Turbo-Inference, side by side, in one run on the same images.

Rows (per model): baseline, + Soft-NMS, + Turbo, + Turbo + Soft-NMS, Turbo with more cycles,
adaptive re-prediction; then the same for the cascade model. For each: COCO box and mask AP,
AP50, AP75 (COCOEvaluator), detections per image, and latency relative to that model's
baseline (median over repeats of whole-model calls, variants alternating, warm-up first).

Defaults evaluate the embedded shapes reference checkpoints on ``shapes_val``::

    python scripts/benchmark.py

Any registered dataset and weights work, e.g. COCO with model zoo weights::

    python scripts/benchmark.py --dataset coco_2017_val \
      --config-file configs/COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml --weights "" \
      --cascade-config configs/COCO-InstanceSegmentation/turbo_cascade_mask_rcnn_R_50_FPN_3x.yaml

(``--weights ""`` keeps the config's ``MODEL.WEIGHTS``.) Writes ``benchmark.md``,
``benchmark.json``, ``ap_vs_cycles.png``, ``ap_vs_latency.png`` and ``examples.png`` to
``--output-dir``.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=os.path.join(
        ROOT, "configs/shapes/turbo_mask_rcnn_R18_FPN.yaml"))
    p.add_argument("--weights", default=os.path.join(
        ROOT, "checkpoints/shapes_mask_rcnn_R18_FPN.pth"),
        help='checkpoint; "" keeps the config\'s MODEL.WEIGHTS')
    p.add_argument("--cascade-config", default=os.path.join(
        ROOT, "configs/shapes/turbo_cascade_mask_rcnn_R18_FPN.yaml"),
        help='config of the cascade rows; "" to leave them out')
    p.add_argument("--cascade-weights", default=os.path.join(
        ROOT, "checkpoints/shapes_cascade_mask_rcnn_R18_FPN.pth"))
    p.add_argument("--dataset", default="shapes_val", help="a registered dataset name")
    p.add_argument("--max-images", type=int, default=0, help="0 = the whole dataset")
    p.add_argument("--cycles", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--repredict-iou", type=float, nargs="*", default=[0.9, 0.0],
                   help="adaptive re-prediction rows (MODEL.TURBO.REPREDICT_IOU values)")
    p.add_argument("--repredict-min-score", type=float, nargs="*", default=[0.3],
                   help="adaptive re-prediction rows (MODEL.TURBO.REPREDICT_MIN_SCORE values, "
                        "others resampled)")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="override MODEL.ROI_HEADS.SCORE_THRESH_TEST (e.g. 0 for 100 dets/img)")
    p.add_argument("--latency-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pictures", type=int, default=4, help="images in examples.png")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output-dir", default=os.path.join(ROOT, "output", "benchmark"))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (both)")
    return p.parse_args(argv)


def load_model(config_file, weights, args):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from turbo import add_turbo_config

    cfg = get_cfg()
    add_turbo_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    if weights:
        cfg.MODEL.WEIGHTS = weights
    if args.score_thresh is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.score_thresh
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    return cfg, model


def fmt_table(rows, results, latency):
    head = ("| variant | box AP | mask AP | box AP50 | box AP75 | mask AP50 | mask AP75 "
            "| dets/img | latency (x baseline) | ms/img |")
    lines = [head, "|" + "---|" * 10]
    for v in rows:
        r = results[v.name]
        base = [x for x in rows if x.model == v.model][0].name
        lat = latency.get(v.name)
        rel = f"{lat / latency[base]:.3f}" if lat is not None else "n/a"
        ms = f"{lat * 1000:.1f}" if lat is not None else "n/a"
        lines.append(
            f"| {v.name} | {r['bbox']['AP']:.2f} | {r['segm']['AP']:.2f} "
            f"| {r['bbox']['AP50']:.2f} | {r['bbox']['AP75']:.2f} "
            f"| {r['segm']['AP50']:.2f} | {r['segm']['AP75']:.2f} "
            f"| {r['dets_per_image']:.1f} | {rel} | {ms} |")
    return "\n".join(lines)


def plot(rows, results, latency, args, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(v.model for v in rows):
        mrows = [v for v in rows if v.model == model]
        by_cycles = {0: next(v for v in mrows if v.params.num_iters == 0 and v.params.soft_nms)}
        for v in mrows:
            if v.params.soft_nms and not v.params.adaptive and v.params.num_iters > 0:
                by_cycles[v.params.num_iters] = v
        xs = sorted(by_cycles)
        for task, style in (("bbox", "o-"), ("segm", "s--")):
            axes[0].plot(xs, [results[by_cycles[c].name][task]["AP"] for c in xs], style,
                         label=f"{model} {'box' if task == 'bbox' else 'mask'} AP")
            base = mrows[0].name
            pts = [(latency[v.name] / latency[base], results[v.name][task]["AP"], v.name)
                   for v in mrows if v.name in latency]
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], style[0], linestyle="none",
                         label=f"{model} {'box' if task == 'bbox' else 'mask'} AP")
            for x, y, name in pts:
                axes[1].annotate(name.replace(model + ": ", ""), (x, y), fontsize=6)
    axes[0].set_xlabel("turbo cycles (with Soft-NMS; 0 = Soft-NMS only)")
    axes[0].set_ylabel("AP")
    axes[0].set_xticks(range(0, max(args.cycles) + 1))
    axes[1].set_xlabel("latency relative to the model's baseline")
    axes[1].set_ylabel("AP")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "ap_vs_cycles_and_latency.png"), dpi=120)
    plt.close(fig)


def pictures(results, rows, dataset, dicts, out_dir, score=0.5):
    """Baseline against Turbo for a few images: masks and boxes; on the Turbo side also the
    detection-stage boxes (red, dashed) and the ground truth (white, dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import ColorMode, Visualizer

    first = rows[0].model
    names = {"baseline": rows[0].name,
             "stage0": next(v.name for v in rows if v.model == first and v.params.num_iters == 0
                            and v.params.soft_nms),
             "turbo": next(v.name for v in rows if v.model == first and v.params.num_iters == 1
                           and v.params.soft_nms and not v.params.adaptive)}
    meta = MetadataCatalog.get(dataset)
    gt = {d["file_name"]: d.get("annotations", []) for d in dicts}
    n = len(results[names["baseline"]]["outputs"])
    if n == 0:
        return
    fig, axes = plt.subplots(n, 2, figsize=(8, 4 * n), squeeze=False)
    for i in range(n):
        inp = results[names["baseline"]]["outputs"][i]["input"]
        img = read_image(inp["file_name"], format="RGB")
        for j, key in enumerate(("baseline", "turbo")):
            inst = results[names[key]]["outputs"][i]["instances"]
            inst = inst[inst.scores > score]
            vis = Visualizer(img, meta, instance_mode=ColorMode.IMAGE)
            axes[i, j].imshow(vis.draw_instance_predictions(inst).get_image())
            axes[i, j].set_title(f"{names[key]} (score > {score})", fontsize=8)
            axes[i, j].axis("off")
        stage0 = results[names["stage0"]]["outputs"][i]["instances"]
        for b in stage0[stage0.scores > score].pred_boxes.tensor.tolist():
            axes[i, 1].add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False,
                                           edgecolor="red", linestyle="--", linewidth=0.8))
        for ann in gt.get(inp["file_name"], []):
            x, y, w, h = ann["bbox"]  # XYWH (COCO json)
            axes[i, 1].add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="white",
                                           linestyle=":", linewidth=0.8))
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "examples.png"), dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
    from detectron2.utils.logger import setup_logger

    from turbo.data import register_shapes, register_tiny_shapes
    from turbo import TurboParams
    from turbo.eval import evaluate_variants, measure_latency, standard_variants

    setup_logger(name="turbo")
    register_shapes()
    register_tiny_shapes()
    os.makedirs(args.output_dir, exist_ok=True)
    t_start = time.perf_counter()

    models, rows, cfgs = {}, [], {}
    specs = [("Mask R-CNN", args.config_file, args.weights)]
    if args.cascade_config:
        specs.append(("Cascade", args.cascade_config, args.cascade_weights))
    for key, cfg_file, weights in specs:
        cfg, model = load_model(cfg_file, weights, args)
        models[key], cfgs[key] = model, cfg
        prefix = "" if key == "Mask R-CNN" else f"{key}: "
        cycles = args.cycles if key == "Mask R-CNN" else [1]
        ious = args.repredict_iou if key == "Mask R-CNN" else []
        min_scores = args.repredict_min_score if key == "Mask R-CNN" else []
        recipe = TurboParams(**type(model.roi_heads).RECIPE)  # the published thresholds
        rows += standard_variants(model.roi_heads.turbo, key, cycles, ious, prefix, recipe,
                                  min_scores)

    dicts = DatasetCatalog.get(args.dataset)
    n_images = len(dicts) if args.max_images <= 0 else min(args.max_images, len(dicts))
    first_cfg = next(iter(cfgs.values()))
    loader = build_detection_test_loader(dicts[:n_images], mapper=DatasetMapper(first_cfg, False),
                                         num_workers=0)
    print(f"Evaluating {len(rows)} variants of {len(models)} model(s) on {n_images} images of "
          f"{args.dataset} ({args.device})", flush=True)

    def progress(done):
        if done % 25 == 0 or done == n_images:
            print(f"  accuracy: {done}/{n_images} images, {time.perf_counter() - t_start:.0f} s",
                  flush=True)

    results = evaluate_variants(models, rows, loader, args.dataset, progress,
                                keep_outputs=args.pictures)
    print(f"Timing {len(rows)} variants on {args.latency_images} images x {args.repeats} repeats",
          flush=True)
    lat_inputs = list(build_detection_test_loader(
        dicts[:args.latency_images], mapper=DatasetMapper(first_cfg, False), num_workers=0))
    latency = measure_latency(models, rows, lat_inputs, repeats=args.repeats)

    table = fmt_table(rows, results, latency)
    header = (f"{args.dataset}, {n_images} images, device {args.device}"
              f" ({torch.get_num_threads()} threads)" * (args.device == "cpu") +
              f", latency: median of {args.repeats} x {len(lat_inputs)} single-image calls")
    print("\n" + header + "\n\n" + table + "\n", flush=True)
    with open(os.path.join(args.output_dir, "benchmark.md"), "w") as f:
        f.write(f"`python scripts/benchmark.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
                f"\n\n{header}\n\n{table}\n")
    with open(os.path.join(args.output_dir, "benchmark.json"), "w") as f:
        json.dump({"dataset": args.dataset, "images": n_images, "device": args.device,
                   "rows": [{"name": v.name, "model": v.model,
                             "params": dataclasses.asdict(v.params),
                             "bbox": results[v.name]["bbox"], "segm": results[v.name]["segm"],
                             "dets_per_image": results[v.name]["dets_per_image"],
                             "latency_s": latency.get(v.name)} for v in rows]},
                  f, indent=1, default=float)
    plot(rows, results, latency, args, args.output_dir)
    pictures(results, rows, args.dataset, dicts, args.output_dir)
    print(f"Wrote {args.output_dir}/benchmark.md, benchmark.json, ap_vs_cycles_and_latency.png, "
          f"examples.png in {time.perf_counter() - t_start:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
