#!/usr/bin/env python
"""Cost of Turbo's parts, each measured side by side with its reference in one run.

1. ``turbo.ops.mask_boxes`` against pasting with Detectron2's ``paste_masks_in_image`` and
   taking the tight box: 100 detections on an 800x1333 input, 28x28 masks (Mask R-CNN) and
   224x224 masks (PointRend); time, largest disagreement in pixels, and peak extra memory of
   each on a 4000x4000 input (measured in a child process).
2. ``turbo.ops.batched_soft_nms`` on ~2,000 candidates over 80 classes against
   torchvision's hard ``batched_nms``, with the top 100 kept as the heads keep them (its steps
   stop once the top 100 is settled) and with every step run; and at LVIS scale (1,203
   classes, top 300, scores down to 1e-4, 5,000 to 80,000 candidates of
   ``turbo.benchmark.synthetic.lvis_like_candidates``) against Detectron2's ``batched_nms``.
3. End to end at 800x1333 with 100 detections per image, random weights (nothing can be
   downloaded here; the mask heads cost what a trained one costs): one turbo cycle against
   the baseline for Mask R-CNN R50-FPN (28x28 masks) and PointRend R50-FPN (224x224 masks);
   and the mask stage of an LVIS Mask R-CNN (1,230-class mask head) at 300 detections, with
   every mask re-predicted and with the rank gate.
4. Host syncs in the turbo cycles of the shapes reference Mask R-CNN, per setting, and in
   the Soft-NMS detection stage.
5. The same model deployed (``turbo.export``): traced TorchScript and ONNX in onnxruntime
   against eager inference, on one image.

Every timing is a median over ``--repeats`` after warm-up, the variants alternating::

    python scripts/bench_ops.py [--device cuda] [--repeats 7]
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
import subprocess
import sys

import torch

from turbo.benchmark.reference_models import REFERENCE_MODELS, REPO_ROOT


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--e2e-repeats", type=int, default=3)
    p.add_argument(
        "--skip-e2e", action="store_true", help="leave out the end-to-end and deployment rows"
    )
    p.add_argument("--shapes-dataset", default="shapes_val", help="images of the host-sync rows")
    p.add_argument(
        "--memory-child", nargs=2, metavar=("WHICH", "MASK_SIZE"), help=argparse.SUPPRESS
    )
    return p.parse_args(argv)


def memory_child(which: str, mask_size: int, device: str, size: int = 4000) -> None:
    """In a child process: peak extra memory (MiB) of one call on a size x size image."""
    from turbo.benchmark.mask_paste import pasted_mask_boxes
    from turbo.benchmark.synthetic import random_soft_masks
    from turbo.benchmark.timing import peak_extra_memory_mib
    from turbo.ops import mask_boxes

    probs, _ = random_soft_masks(100, mask_size, size, size, device)
    boxes = torch.tensor([[0.0, 0.0, size * 0.9, size * 0.9]], device=device).expand(100, 4)
    fn = {
        "turbo": lambda: mask_boxes(probs, boxes, (size, size), 0.2),
        "paste": lambda: pasted_mask_boxes(probs, boxes, (size, size), 0.2, whole_image=False),
    }
    print(json.dumps({"peak_mib": peak_extra_memory_mib(fn[which], device)}))


def bench_mask_boxes(device, repeats, mask_size):
    from turbo.benchmark.mask_paste import pasted_mask_boxes
    from turbo.benchmark.synthetic import random_soft_masks
    from turbo.benchmark.timing import time_calls
    from turbo.ops import mask_boxes

    h, w = 800, 1333
    probs, boxes = random_soft_masks(100, mask_size, h, w, device)
    t = time_calls(
        {
            "turbo": lambda: mask_boxes(probs, boxes, (h, w), 0.2),
            "paste": lambda: pasted_mask_boxes(probs, boxes, (h, w), 0.2, whole_image=False),
        },
        repeats,
        device=device,
    )
    ours, found = mask_boxes(probs, boxes, (h, w), 0.2)
    ref, ref_found = pasted_mask_boxes(probs, boxes, (h, w), 0.2)
    both = found & ref_found
    diff = (ours[both] - ref[both]).abs().max().item() if both.any() else 0.0
    mem = {}
    for which in ("turbo", "paste"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, str(mask_size), "--device", device],
            capture_output=True,
            text=True,
            check=True,
        )
        mem[which] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    m = f"{mask_size}x{mask_size}"
    return [
        (
            f"mask_boxes, 100 dets, {m} masks, 800x1333: turbo / paste",
            f"{t['turbo'] * 1e3:.2f} ms / {t['paste'] * 1e3:.1f} ms",
            f"{t['paste'] / t['turbo']:.1f}x faster",
        ),
        (
            f"mask_boxes, {m}, against the whole-image paste: largest side difference, "
            "same rows found",
            f"{diff:.0f} px, {bool((found == ref_found).all())}",
            "exact",
        ),
        (
            f"peak extra memory, 100 dets, {m}, 4000x4000: turbo / paste",
            f"{mem['turbo']:.1f} MiB / {mem['paste']:.0f} MiB",
            f"{mem['paste'] / max(mem['turbo'], 0.1):.0f}x less",
        ),
    ]


def bench_soft_nms(device, repeats):
    from torchvision.ops import batched_nms

    from turbo.benchmark.synthetic import coco_like_candidates
    from turbo.benchmark.timing import time_calls
    from turbo.ops import batched_soft_nms

    boxes, scores, cls = (t.to(device) for t in coco_like_candidates())
    t = time_calls(
        {
            "top100": lambda: batched_soft_nms(boxes, scores, cls, topk=100),
            "every": lambda: batched_soft_nms(boxes, scores, cls),
            "hard": lambda: batched_nms(boxes, scores, cls, 0.5),
        },
        repeats,
        device=device,
    )
    rows = [
        (
            f"Soft-NMS, {len(boxes)} candidates / 80 classes, top 100: soft / hard NMS",
            f"{t['top100'] * 1e3:.2f} ms / {t['hard'] * 1e3:.2f} ms",
            f"{t['top100'] / t['hard']:.2f}x hard NMS",
        ),
        (
            "Soft-NMS, same candidates: top 100 / every step",
            f"{t['top100'] * 1e3:.2f} ms / {t['every'] * 1e3:.2f} ms",
            f"{t['every'] / t['top100']:.2f}x faster",
        ),
    ]
    return rows, t["top100"]


def bench_lvis_soft_nms(device, repeats):
    """Soft-NMS at LVIS scale (1,203 classes, top 300, scores down to 1e-4) against the hard
    NMS Detectron2's ``fast_rcnn_inference`` runs, at several candidate counts."""
    from detectron2.layers import batched_nms

    from turbo.benchmark.synthetic import lvis_like_candidates
    from turbo.benchmark.timing import time_calls
    from turbo.ops import batched_soft_nms

    rows, seconds = [], {}
    for per in (5, 20, 80):
        c = tuple(t.to(device) for t in lvis_like_candidates(per_proposal=per))
        boxes = c[0]
        t = time_calls(
            {
                "soft": lambda c=c: batched_soft_nms(*c, min_score=1e-4, topk=300),
                "hard": lambda c=c: batched_nms(*c, 0.5)[:300],
            },
            repeats,
            device=device,
        )
        seconds[len(boxes)] = t["soft"]
        rows.append(
            (
                f"Soft-NMS, {len(boxes):,} candidates / 1,203 classes, top 300: soft / hard NMS",
                f"{t['soft'] * 1e3:.1f} ms / {t['hard'] * 1e3:.1f} ms",
                f"{t['soft'] / t['hard']:.2f}x hard NMS",
            )
        )
    return rows, seconds


def bench_lvis_cycle(device, repeats):
    """The mask stage at 300 detections with an LVIS model's 1,230-class mask head (random
    weights, 800x1333): upstream's one mask-head pass against Turbo's first masks + one
    cycle, with every mask re-predicted and with the rank gate."""
    from detectron2.structures import Boxes, Instances

    from turbo.benchmark.synthetic import lvis_like_candidates
    from turbo.benchmark.timing import time_calls
    from turbo.build import build_turbo_model, load_config

    cfg = load_config(
        os.path.join(
            REPO_ROOT, "configs/LVISv0.5-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_1x.yaml"
        )
    )
    torch.manual_seed(0)
    model = build_turbo_model(cfg, device).eval()
    heads = model.roi_heads
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 800, 1333, generator=g) * 255).to(device)
    boxes, scores, cls = lvis_like_candidates(num_classes=1230)
    top = torch.argsort(scores, descending=True)[:300]
    det = Instances(
        (800, 1333),
        pred_boxes=Boxes(boxes[top].to(device)),
        scores=scores[top].to(device),
        pred_classes=cls[top].to(device),
    )
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)

        def upstream():
            with heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
                return heads.forward_with_given_boxes(features, [det])

        def turbo(k):
            with heads.turbo_params(repredict_topk=k):
                return heads.refine(features, [det])

        t = time_calls(
            {
                "backbone": lambda: model.backbone(images.tensor),
                "upstream": upstream,
                "all": lambda: turbo(0),
                "gate15": lambda: turbo(15),
                "gate50": lambda: turbo(50),
            },
            repeats,
            warmup=1,
            device=device,
        )
    base = t["upstream"]
    rows = [
        (
            "LVIS mask stage, 300 dets, 1,230-class mask head: upstream mask head / backbone",
            f"{base * 1e3:.0f} ms / {t['backbone'] * 1e3:.0f} ms",
            f"{base / t['backbone']:.2f}x the backbone",
        )
    ]
    for key, label in (
        ("all", "every mask re-predicted (published)"),
        ("gate50", "rank gate REPREDICT_TOPK 50"),
        ("gate15", "rank gate REPREDICT_TOPK 15"),
    ):
        rows.append(
            (
                f"LVIS mask stage, 300 dets: Turbo 1 cycle, {label} / upstream",
                f"{t[key] * 1e3:.0f} ms / {base * 1e3:.0f} ms",
                f"{t[key] / base:.2f}x; {(t[key] - base) / (base + t['backbone']) * 100:+.0f}% "
                "of backbone + mask stage",
            )
        )
    return rows


def random_model(config: str, device: str, num_iters: int):
    """``turbo.benchmark.synthetic.random_model`` of ``config`` with ``num_iters`` cycles and
    hard NMS."""
    from turbo.benchmark.synthetic import random_model as build

    opts = ["MODEL.TURBO.NUM_ITERS", str(num_iters), "MODEL.TURBO.SOFT_NMS.ENABLED", "False"]
    return build(os.path.join(REPO_ROOT, config), device, opts)


def bench_end_to_end(device, repeats, soft_nms_seconds, lvis_soft_nms_seconds):
    from turbo.benchmark.timing import time_calls

    g = torch.Generator().manual_seed(0)
    inputs = [
        {
            "image": (torch.rand(3, 800, 1333, generator=g) * 255).to(device),
            "height": 800,
            "width": 1333,
        }
    ]
    rows = []
    for name, config in (
        (
            "Mask R-CNN R50-FPN",
            "configs/COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml",
        ),
        ("PointRend R50-FPN", "configs/PointRend/turbo_pointrend_rcnn_R_50_FPN_3x_coco.yaml"),
    ):
        base = random_model(config, device, 0)
        turbo = random_model(config, device, 1)
        turbo.load_state_dict(base.state_dict())

        def run(m):
            with torch.no_grad():
                return m(inputs)

        t = time_calls(
            {"baseline": lambda base=base: run(base), "turbo": lambda turbo=turbo: run(turbo)},
            repeats,
            warmup=1,
            device=device,
        )
        n = len(run(turbo)[0]["instances"])
        rows.append(
            (
                f"{name} 800x1333, {n} dets: Turbo 1 cycle (defaults, hard NMS) / baseline",
                f"{t['turbo'] * 1e3:.0f} ms / {t['baseline'] * 1e3:.0f} ms",
                f"{t['turbo'] / t['baseline']:.3f}x latency",
            )
        )
        if name.startswith("Mask R-CNN"):
            rows.append(
                (
                    "Soft-NMS (top 100 of 2,000) against one R50-FPN inference",
                    f"{soft_nms_seconds * 1e3:.1f} ms of {t['baseline'] * 1e3:.0f} ms",
                    f"{100 * soft_nms_seconds / t['baseline']:.2f}%",
                )
            )
            for n, seconds in lvis_soft_nms_seconds.items():
                rows.append(
                    (
                        f"Soft-NMS (LVIS scale, top 300 of {n:,}) against one R50-FPN inference",
                        f"{seconds * 1e3:.1f} ms of {t['baseline'] * 1e3:.0f} ms",
                        f"{100 * seconds / t['baseline']:.2f}%",
                    )
                )
    return rows


def bench_host_syncs(device, dataset):
    from detectron2.data import DatasetCatalog

    from turbo.benchmark.host_syncs import count_host_syncs
    from turbo.benchmark.runner import inference_loader, run_prefix, set_score_thresh
    from turbo.benchmark.variants import PUBLISHED
    from turbo.build import load_model
    from turbo.config import TurboParams
    from turbo.datasets import register_synthetic_datasets
    from turbo.inference import soft_nms_detections

    register_synthetic_datasets()
    _, cfg_file, weights = REFERENCE_MODELS["mask_rcnn"]
    cfg, model = load_model(
        os.path.join(REPO_ROOT, cfg_file), os.path.join(REPO_ROOT, weights), device
    )
    set_score_thresh(model, 0.0)
    batch = next(iter(inference_loader(cfg, DatasetCatalog.get(dataset)[:1])))
    heads = model.roi_heads
    prefix = run_prefix(model, batch)
    settings = {
        "published recipe (every mask re-predicted)": PUBLISHED,
        "default (REPREDICT_TOPK 20, REPREDICT_MIN_SCORE 0.3)": TurboParams(),
    }
    counts = {}
    with torch.no_grad():
        for name, params in settings.items():
            with heads.turbo_params(params):
                det = heads.detect(prefix.features, prefix.proposals)
                with count_host_syncs(heads) as syncs:
                    heads.refine(prefix.features, det)
            counts[f"the turbo cycle, 1 image, 100 dets: {name}"] = len(syncs)
        # the suppression of the detection stage alone (the box head's pooler syncs as upstream)
        boxes, scores = heads.box_candidates(prefix.features, prefix.proposals)
        predictor = heads.box_predictor
        with count_host_syncs(heads) as syncs:
            soft_nms_detections(
                boxes,
                scores,
                [p.image_size for p in prefix.proposals],
                predictor.test_score_thresh,
                predictor.test_topk_per_image,
                heads.turbo.soft_nms,
            )
        counts["Soft-NMS detection (soft_nms_detections), 1 image"] = len(syncs)
    return [
        (f"host syncs in {name}", str(n), "none" if n == 0 else "host waits for the device")
        for name, n in counts.items()
    ]


def bench_export(device, repeats, dataset):
    """The shapes reference Mask R-CNN (package defaults) on one image: eager inference against
    the same model traced to TorchScript and exported to ONNX (onnxruntime, CPU), each giving
    the ROI heads' outputs before ``detector_postprocess``."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    from turbo.benchmark.timing import time_calls
    from turbo.build import load_model
    from turbo.datasets import register_synthetic_datasets
    from turbo.export import OnnxModel, eager_outputs, onnx_bytes, trace

    register_synthetic_datasets()
    _, cfg_file, weights = REFERENCE_MODELS["mask_rcnn"]
    _, model = load_model(
        os.path.join(REPO_ROOT, cfg_file), os.path.join(REPO_ROOT, weights), device
    )
    files = [d["file_name"] for d in DatasetCatalog.get(dataset)[:2]]
    images = [
        torch.as_tensor(read_image(f, format="BGR").transpose(2, 0, 1).copy()).to(device)
        for f in files
    ]
    adapter, traced = trace(model, images[0])
    calls = {
        "eager": lambda: eager_outputs(model, images[-1]),
        "torchscript": lambda: traced(images[-1]),
    }
    if device == "cpu":
        data, onnx_adapter = onnx_bytes(model, images[0])
        runner = OnnxModel(data, onnx_adapter)
        calls["onnx"] = lambda: runner(images[-1])
    with torch.no_grad():
        t = time_calls(calls, repeats, warmup=1, device=device)
    n = len(eager_outputs(model, images[-1]))
    rows = [
        (
            f"shapes Mask R-CNN, 1 image, {n} dets: TorchScript (traced) / eager",
            f"{t['torchscript'] * 1e3:.0f} ms / {t['eager'] * 1e3:.0f} ms",
            f"{t['torchscript'] / t['eager']:.2f}x eager",
        )
    ]
    if "onnx" in t:
        rows.append(
            (
                f"shapes Mask R-CNN, 1 image, {n} dets: ONNX (onnxruntime, CPU) / eager",
                f"{t['onnx'] * 1e3:.0f} ms / {t['eager'] * 1e3:.0f} ms",
                f"{t['onnx'] / t['eager']:.2f}x eager",
            )
        )
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child[0], int(args.memory_child[1]), args.device)
    dev = args.device
    rows = bench_mask_boxes(dev, args.repeats, 28) + bench_mask_boxes(dev, args.repeats, 224)
    nms_rows, soft_nms_seconds = bench_soft_nms(dev, args.repeats)
    rows += nms_rows
    lvis_rows, lvis_seconds = bench_lvis_soft_nms(dev, args.repeats)
    rows += lvis_rows
    if not args.skip_e2e:
        rows += bench_end_to_end(dev, args.e2e_repeats, soft_nms_seconds, lvis_seconds)
        rows += bench_lvis_cycle(dev, args.e2e_repeats)
    rows += bench_host_syncs(dev, args.shapes_dataset)
    if not args.skip_e2e:
        rows += bench_export(dev, args.repeats, args.shapes_dataset)
    threads = f", {torch.get_num_threads()} threads" if dev == "cpu" else ""
    print(
        f"\ndevice: {dev}{threads}, medians of {args.repeats} (ops) / {args.e2e_repeats} "
        "(end to end)\n"
    )
    print("| part | measured | ratio |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
