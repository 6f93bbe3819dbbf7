#!/usr/bin/env python
"""Cost of Turbo's parts, each measured side by side with its reference in one run.

1. ``turbo.ops.mask_boxes`` against pasting through Detectron2's ``paste_masks_in_image`` and
   taking the tight box: 100 detections, 28x28 masks, an 800x1333 input; time ratio, largest
   disagreement (pixels), and peak extra memory of each on a 4000x4000 input (child processes,
   peak resident memory on CPU; ``max_memory_allocated`` on CUDA).
2. ``turbo.ops.batched_soft_nms`` on ~2,000 candidates over 80 classes, against torchvision's
   hard ``batched_nms``, as a share of one end-to-end inference of Mask R-CNN R50-FPN at 800 px.
   Soft-NMS is timed as the heads run it (top 100 kept, so its steps stop once the top 100
   is settled) and with every step run.
3. End to end, Mask R-CNN R50-FPN (80 classes) at 800x1333 with 100 detections per image:
   Turbo (1 cycle, full re-prediction) and Turbo with adaptive re-prediction against the
   baseline. Random weights (nothing can be downloaded here): the mask head's cost is the
   same as a trained one's, but every box moves, so adaptive re-prediction saves nothing there.
4. The shapes reference Mask R-CNN (``checkpoints/``) on ``shapes_val`` with the score
   threshold at 0, so that every image yields 100 detections: the baseline, Turbo + Soft-NMS
   with full re-prediction, and the fast setting (``--fast``, config keys): latency ratios
   and the share of full re-prediction's box and mask AP gain the fast setting keeps.
5. Host syncs inside the turbo cycles (``turbo.eval.count_host_syncs``), default path and
   the fast setting, on the shapes model.

Every timing is a median over ``--repeats`` after warm-up, variants alternating.
Usage: ``python scripts/bench_ops.py [--device cuda] [--repeats 7]``
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fns, device, repeats, warmup=2):
    """Median seconds of each callable in ``fns`` (dict), calls alternating."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def random_detections(n, m, h, w, device, seed=0):
    """n soft masks (n, m, m) with blob-like foreground and boxes (n, 4) inside an h x w image."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 0.8 - 0.4
    r = torch.rand(n, 1, 1, generator=g) * 0.5 + 0.3
    d = ((xx[None] - c[:, 0, None, None]) ** 2 + (yy[None] - c[:, 1, None, None]) ** 2).sqrt()
    probs = torch.sigmoid((r - d) * 12 + torch.randn(n, m, m, generator=g) * 0.5)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 8
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh)
    boxes = torch.cat([xy, xy + wh], 1)
    return probs.to(device), boxes.to(device)


def paste_reference(probs, boxes, image_size, thresh, full=False):
    """Tight box of each mask pasted with Detectron2's paste_masks_in_image (the reference).

    On CPU that function pastes only inside the boxes' window +-1 pixel, which cuts the up to
    half a mask cell the bilinear paste spills outside a box; ``full=True`` pads every mask by
    two zero cells and grows its box to match (the same bilinear paste, mathematically), so the
    window covers the spill, as on CUDA.
    """
    import torch.nn.functional as F

    from detectron2.layers.mask_ops import paste_masks_in_image
    from detectron2.structures import BitMasks

    if full:
        k, m = 2, probs.shape[-1]
        cell = (boxes[:, 2:] - boxes[:, :2]) / m
        boxes = torch.cat([boxes[:, :2] - k * cell, boxes[:, 2:] + k * cell], 1)
        probs = F.pad(probs, (k, k, k, k))
    bm = BitMasks(paste_masks_in_image(probs, boxes, image_size, thresh))
    return bm.get_bounding_boxes().tensor, bm.nonempty()


def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(which, device, size):
    """Run in a child process: peak extra memory (MiB) of one call on a size x size image."""
    from turbo.ops import mask_boxes

    probs, boxes = random_detections(100, 28, size, size, device)
    boxes = boxes * 0 + torch.tensor([0.0, 0.0, size * 0.9, size * 0.9], device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        # Reset the peak resident size (Linux: "5" > clear_refs) so that the import-time peak
        # does not hide the call's own; then peak - current = the call's extra memory.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status_kib("VmRSS")
    if which == "turbo":
        mask_boxes(probs, boxes, (size, size), 0.2)
    else:
        paste_reference(probs, boxes, (size, size), 0.2)
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (_proc_status_kib("VmHWM") - base) / 1024  # KiB -> MiB
    print(json.dumps({"peak_mib": peak}))


def bench_mask_boxes(device, repeats):
    from turbo.ops import mask_boxes

    h, w = 800, 1333
    probs, boxes = random_detections(100, 28, h, w, device)
    times = timeit({"turbo": lambda: mask_boxes(probs, boxes, (h, w), 0.2),
                    "paste": lambda: paste_reference(probs, boxes, (h, w), 0.2)},
                   device, repeats)
    ours, found = mask_boxes(probs, boxes, (h, w), 0.2)
    ref, ref_found = paste_reference(probs, boxes, (h, w), 0.2, full=True)
    both = found & ref_found
    diff = (ours[both] - ref[both]).abs().max().item() if both.any() else 0.0
    mem = {}
    for which in ("turbo", "paste"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, "--device", device],
            capture_output=True, text=True, check=True)
        mem[which] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    return times, diff, bool((found == ref_found).all()), mem


def coco_like_candidates(n_objects=100, per_object=20, num_classes=80, h=800, w=1333, seed=0):
    """~2,000 candidates as a box head yields them: clusters of jittered boxes around objects,
    each cluster spread over a few classes, scores decaying within a cluster."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n_objects, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
    xy = torch.rand(n_objects, 2, generator=g) * (torch.tensor([w, h]) - wh)
    centre = torch.cat([xy, xy + wh], 1).repeat_interleave(per_object, 0)
    size = wh.repeat(1, 2).repeat_interleave(per_object, 0)
    boxes = centre + torch.randn(len(centre), 4, generator=g) * size * 0.08
    boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], 1)
    base_cls = torch.randint(0, num_classes, (n_objects,), generator=g)
    cls = (base_cls.repeat_interleave(per_object) +
           torch.randint(0, 3, (len(boxes),), generator=g) * 7) % num_classes
    scores = torch.rand(len(boxes), generator=g) * 0.9 + 0.05
    return boxes, scores, cls


def build_r50(device, num_iters, soft_nms, repredict_iou=1.0):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from turbo import add_turbo_config

    cfg = get_cfg()
    add_turbo_config(cfg)
    cfg.merge_from_file(os.path.join(
        ROOT, "configs/COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # 100 detections per image
    cfg.MODEL.TURBO.NUM_ITERS = num_iters
    cfg.MODEL.TURBO.SOFT_NMS.ENABLED = soft_nms
    cfg.MODEL.TURBO.REPREDICT_IOU = repredict_iou
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # Random weights on unnormalised pixels give huge regression deltas (every proposal becomes
    # the whole image). Zero the RPN and box regression: proposals are the anchors and boxes
    # the proposals, so there are 100 distinct detections, as from a trained model.
    with torch.no_grad():
        for layer in (model.proposal_generator.rpn_head.anchor_deltas,
                      model.roi_heads.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
    return model


# The fast setting of target 4 (README, "Cost of the parts"): one cycle, masks re-predicted
# only for detections scoring at least REPREDICT_MIN_SCORE, the others resampled.
FAST = ("REPREDICT_MIN_SCORE", "0.3", "RESAMPLE_MASKS", "True")


def bench_shapes(device, fast, repeats, dataset="shapes_val"):
    """Rows of targets 4 and 5 on the shapes reference Mask R-CNN at 100 detections per image."""
    import dataclasses

    from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from benchmark import load_model, parse_args
    from turbo.config import TurboParams
    from turbo.data import register_shapes, register_tiny_shapes
    from turbo.eval import Variant, count_host_syncs, evaluate_variants, measure_latency

    register_shapes()
    register_tiny_shapes()
    args = parse_args(["--score-thresh", "0", "--device", device])
    cfg, model = load_model(args.config_file, args.weights, args)
    base = model.roi_heads.turbo
    fast_cfg = cfg.clone()
    fast_cfg.defrost()
    fast_cfg.MODEL.TURBO.merge_from_list(list(fast))
    fast_params = TurboParams.from_cfg(fast_cfg, type(model.roi_heads).RECIPE)
    fast_name = " ".join(f"{k} {v}" for k, v in zip(fast[::2], fast[1::2])) or "default"
    r = dataclasses.replace
    variants = [Variant("baseline", "m", r(base, num_iters=0, soft_nms=False)),
                Variant("full", "m", r(base, num_iters=1, soft_nms=True, repredict_iou=1.0,
                                       repredict_min_score=0.0)),
                Variant("fast", "m", r(fast_params, num_iters=1, soft_nms=True))]
    dicts = DatasetCatalog.get(dataset)
    mapper = DatasetMapper(cfg, False)
    print(f"shapes: evaluating 3 variants on {len(dicts)} images ...", flush=True)
    res = evaluate_variants({"m": model}, variants,
                            build_detection_test_loader(dicts, mapper=mapper, num_workers=0),
                            dataset)
    lat = measure_latency({"m": model}, variants, list(build_detection_test_loader(
        dicts[:8], mapper=mapper, num_workers=0)), repeats=repeats)

    def kept(task):
        b, f, x = (res[k][task]["AP"] for k in ("baseline", "full", "fast"))
        return (x - b) / (f - b) if f != b else float("nan")

    def ap(k):
        return f"{res[k]['bbox']['AP']:.2f} / {res[k]['segm']['AP']:.2f}"

    dets = res["baseline"]["dets_per_image"]
    rows = [
        (f"{dataset} Mask R-CNN, {dets:.0f} dets/img: Turbo + Soft-NMS, full re-prediction / "
         "baseline", f"{lat['full'] * 1e3:.0f} ms / {lat['baseline'] * 1e3:.0f} ms",
         f"{lat['full'] / lat['baseline']:.3f}x latency"),
        (f"shapes, fast ({fast_name}) / baseline",
         f"{lat['fast'] * 1e3:.0f} ms / {lat['baseline'] * 1e3:.0f} ms",
         f"{lat['fast'] / lat['baseline']:.3f}x latency (target <= 1.10x)"),
        ("shapes box / mask AP: baseline, full, fast",
         f"{ap('baseline')}, {ap('full')}, {ap('fast')}",
         f"fast keeps {kept('bbox'):.0%} / {kept('segm'):.0%} of the gain (target >= 90%)"),
    ]

    # target 5: host syncs between the detection stage and the output
    inputs = next(iter(build_detection_test_loader(dicts[:1], mapper=mapper, num_workers=0)))
    counts = {}
    rh = model.roi_heads
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        for v in variants[1:]:
            rh.turbo = v.params
            det = rh._detect(features, proposals)
            with count_host_syncs(rh) as syncs:
                rh._turbo_masks(features, det)
            counts[v.name] = len(syncs)
    rh.turbo = base
    rows.append(("host syncs in the turbo cycles, 1 image: full / fast",
                 f"{counts['full']} / {counts['fast']}",
                 "target 0 on the default path (the fast path selects rows by value)"))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--e2e-repeats", type=int, default=3)
    p.add_argument("--memory-child", choices=["turbo", "paste"], help=argparse.SUPPRESS)
    p.add_argument("--skip-e2e", action="store_true", help="leave out the R50-FPN rows")
    p.add_argument("--skip-shapes", action="store_true", help="leave out the shapes rows")
    p.add_argument("--shapes-dataset", default="shapes_val", help="dataset of the shapes rows")
    p.add_argument("--fast", nargs="*", default=list(FAST),
                   help="MODEL.TURBO overrides of the fast setting (KEY VALUE ...)")
    a = p.parse_args()
    if a.memory_child:
        return _memory_child(a.memory_child, a.device, 4000)
    dev = a.device
    rows = []

    times, diff, found_eq, mem = bench_mask_boxes(dev, a.repeats)
    rows.append(("mask_boxes, 100 dets, 800x1333: turbo / paste time",
                 f"{times['turbo'] * 1e3:.2f} ms / {times['paste'] * 1e3:.1f} ms",
                 f"{times['paste'] / times['turbo']:.1f}x faster (target >= 20x)"))
    rows.append(("mask_boxes vs full paste: largest side difference, found equal",
                 f"{diff:.0f} px, {found_eq}", "target <= 1 px"))
    rows.append(("peak extra memory, 100 dets, 4000x4000: turbo / paste",
                 f"{mem['turbo']:.1f} MiB / {mem['paste']:.0f} MiB", "target < 100 MB"))

    from torchvision.ops import batched_nms

    from turbo.ops import batched_soft_nms

    boxes, scores, cls = (t.to(dev) for t in coco_like_candidates())
    t_nms = timeit({
        "soft": lambda: batched_soft_nms(boxes, scores, cls, "linear", 0.5, 0.5, 1e-3, topk=100),
        "all": lambda: batched_soft_nms(boxes, scores, cls, "linear", 0.5, 0.5, 1e-3),
        "hard": lambda: batched_nms(boxes, scores, cls, 0.5)}, dev, a.repeats)
    rows.append((f"Soft-NMS, {len(boxes)} candidates / 80 classes, top 100: soft / hard NMS",
                 f"{t_nms['soft'] * 1e3:.2f} ms / {t_nms['hard'] * 1e3:.2f} ms",
                 f"{t_nms['soft'] / t_nms['hard']:.1f}x hard NMS"))
    rows.append(("Soft-NMS, same candidates: top 100 / every step",
                 f"{t_nms['soft'] * 1e3:.2f} ms / {t_nms['all'] * 1e3:.2f} ms",
                 f"{t_nms['all'] / t_nms['soft']:.2f}x faster"))

    if not a.skip_e2e:
        g = torch.Generator().manual_seed(0)
        inputs = [{"image": (torch.rand(3, 800, 1333, generator=g) * 255).to(dev),
                   "height": 800, "width": 1333}]
        # Soft-NMS off in all three: the ratio isolates the cost of the turbo cycle itself
        models = {"baseline": build_r50(dev, 0, False), "turbo": build_r50(dev, 1, False),
                  "adaptive": build_r50(dev, 1, False, 0.9)}
        sd = models["baseline"].state_dict()
        for m in models.values():
            m.load_state_dict(sd)

        def run(m):
            with torch.no_grad():
                return m(inputs)

        t = timeit({k: (lambda m=m: run(m)) for k, m in models.items()}, dev, a.e2e_repeats, 1)
        n_det = len(run(models["turbo"])[0]["instances"])
        rows.append(("Soft-NMS share of R50-FPN 800x1333 inference",
                     f"{t_nms['soft'] * 1e3:.1f} ms of {t['baseline'] * 1e3:.0f} ms",
                     f"{100 * t_nms['soft'] / t['baseline']:.2f}% (target < 2%)"))
        rows.append((f"R50-FPN 800x1333, {n_det} dets: Turbo 1 cycle (no Soft-NMS) / baseline",
                     f"{t['turbo'] * 1e3:.0f} ms / {t['baseline'] * 1e3:.0f} ms",
                     f"{t['turbo'] / t['baseline']:.3f}x latency"))
        rows.append(("R50-FPN, adaptive (REPREDICT_IOU 0.9, no Soft-NMS) / baseline",
                     f"{t['adaptive'] * 1e3:.0f} ms / {t['baseline'] * 1e3:.0f} ms",
                     f"{t['adaptive'] / t['baseline']:.3f}x latency (random weights)"))

    if not a.skip_shapes:
        rows += bench_shapes(dev, a.fast, a.e2e_repeats, a.shapes_dataset)

    threads = f", {torch.get_num_threads()} threads" if dev == "cpu" else ""
    print(f"\ndevice: {dev}{threads}, medians of {a.repeats} (ops) / {a.e2e_repeats} (end to end)\n")
    print("| target | measured | ratio |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
