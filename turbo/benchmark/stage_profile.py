"""Where one inference spends its time: the stages of the baseline (Detectron2's own ROI heads)
and of Turbo, timed one by one on the same images.

:func:`turbo_stages` runs the stages ``TurboMixin.refine`` runs, in its order, on the heads'
own stage functions (:mod:`turbo.inference`), so that each can be timed; its outputs are the
model's (tested). The baseline runs Detectron2's box head, ``fast_rcnn_inference`` (hard NMS)
and ``forward_with_given_boxes``. Both end in Detectron2's postprocessing (the paste of the
masks into the original image). Models with a keypoint head are not profiled (their keypoint
stage is the parent's, the same in both).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from torch import nn

from ..build import turbo_heads_of
from ..config import TurboParams
from ..inference import (
    Detections,
    TurboResult,
    output_masks,
    refine_boxes,
    repredicted_rows,
    rescored,
    soft_nms_detections,
    updated_masks,
)
from .runner import postprocess, run_prefix

__all__ = ["BASELINE_STAGES", "TURBO_STAGES", "baseline_stages", "turbo_stages", "profile_stages"]

BASELINE_STAGES = ("backbone and proposals", "box head", "hard NMS", "mask head", "paste")
TURBO_STAGES = (
    "backbone and proposals",
    "box head",
    "Soft-NMS",
    "mask head: first pass",
    "refinement",
    "mask head: re-prediction",
    "Maskness",
    "outputs",
    "paste",
)

Timer = Callable[[str, Callable[[], object]], object]


def _untimed(stage: str, fn: Callable[[], object]) -> object:
    return fn()


@torch.no_grad()
def baseline_stages(model: nn.Module, batch: List[dict], timer: Timer = _untimed) -> List[dict]:
    """Detectron2's inference of ``model`` on ``batch`` (Turbo off), each stage of
    :data:`BASELINE_STAGES` run through ``timer(stage, fn)``; the postprocessed outputs."""
    heads = turbo_heads_of(model)
    with heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
        prefix = timer(BASELINE_STAGES[0], lambda: run_prefix(model, batch))
        f, proposals = prefix.features, prefix.proposals
        boxes, scores = timer("box head", lambda: heads.box_candidates(f, proposals))
        pred = heads.final_box_predictor()
        instances, _ = timer(
            "hard NMS",
            lambda: fast_rcnn_inference(
                boxes,
                scores,
                [p.image_size for p in proposals],
                pred.test_score_thresh,
                pred.test_nms_thresh,
                pred.test_topk_per_image,
            ),
        )
        if heads.mask_on:
            instances = timer("mask head", lambda: heads.forward_with_given_boxes(f, instances))
        return timer("paste", lambda: postprocess(instances, batch, prefix.images.image_sizes))


@torch.no_grad()
def turbo_stages(
    model: nn.Module,
    batch: List[dict],
    params: Optional[TurboParams] = None,
    timer: Timer = _untimed,
) -> List[dict]:
    """Turbo's inference of ``model`` on ``batch`` under ``params`` (default: the heads' own),
    with Soft-NMS and at least one cycle, each stage of :data:`TURBO_STAGES` run through
    ``timer(stage, fn)``; the postprocessed outputs, those of ``model(batch)``."""
    heads = turbo_heads_of(model)
    with heads.turbo_params(params) as p:
        if not (p.soft_nms.enabled and p.num_iters > 0 and heads.mask_on):
            raise ValueError("turbo_stages profiles Soft-NMS and the cycles: both must be on")
        prefix = timer(TURBO_STAGES[0], lambda: run_prefix(model, batch))
        f, proposals = prefix.features, prefix.proposals
        sizes = [x.image_size for x in proposals]
        boxes, scores = timer("box head", lambda: heads.box_candidates(f, proposals))
        pred = heads.final_box_predictor()
        instances = timer(
            "Soft-NMS",
            lambda: soft_nms_detections(
                boxes, scores, sizes, pred.test_score_thresh, pred.test_topk_per_image, p.soft_nms
            ),
        )
        dets = Detections.from_instances(instances)
        rows, row_counts = repredicted_rows(dets, p.repredict_topk, p.repredict_min_score)
        first = timer("mask head: first pass", lambda: heads.first_masks(f, instances))
        classes = dets.classes if rows is None else dets.classes[rows]
        boxes, masks = dets.boxes, first
        found = torch.ones_like(dets.classes, dtype=torch.bool)
        for _ in range(p.num_iters):
            refined, found_now = timer(
                "refinement", lambda m=masks, b=boxes: refine_boxes(p, m, b, dets.image_hw)
            )

            def repredict(masks=masks, boxes=boxes, refined=refined):
                again = refined if rows is None else refined[rows]
                new = heads.predict_masks(f, again, classes, row_counts, sizes)
                return updated_masks(masks, boxes, refined, rows, new)

            masks = timer("mask head: re-prediction", repredict)
            boxes, found = refined, found & found_now
        scores, m = timer(
            "Maskness",
            lambda: rescored(p, dets.scores, first, masks, dets.classes, heads.class_score_knots),
        )
        results = timer(
            "outputs",
            lambda: TurboResult(
                boxes=boxes, masks=output_masks(p, masks), scores=scores, maskness=m, found=found
            ).to_instances(
                dets,
                sizes,
                drop_empty=p.empty_mask == "drop",
                score_thresh=pred.test_score_thresh,
            ),
        )
        return timer("paste", lambda: postprocess(results, batch, prefix.images.image_sizes))


def profile_stages(
    model: nn.Module,
    batches: List[List[dict]],
    params: Optional[TurboParams] = None,
    repeats: int = 3,
    warmup: int = 1,
) -> Dict[str, Dict[str, float]]:
    """Milliseconds per image of each stage, for "baseline" and "turbo" (under ``params``):
    per batch the median over ``repeats`` rounds (the two alternating, each stage
    synchronised on CUDA), then the mean over ``batches`` (one image each); "whole call":
    ``model(batch)`` timed the same way; "dets/img" each one's detections per image, "masked
    dets/img" those its (first) mask pass sees; and under "ratio", "whole call": the median
    over rounds and images of Turbo's whole call over the baseline's.
    ``warmup`` uncounted rounds first."""
    device = str(next(model.parameters()).device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    heads = turbo_heads_of(model)
    samples: Dict[Tuple[str, int], Dict[str, List[float]]] = {}
    counts: Dict[str, List[int]] = {"baseline": [], "turbo": []}
    suppressed: Dict[str, Dict[int, int]] = {}

    def timed(kind: str, index: int, record: bool):
        def timer(stage: str, fn: Callable[[], object]) -> object:
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            if record:
                times = samples.setdefault((kind, index), {})
                times.setdefault(stage, []).append(1e3 * (time.perf_counter() - t0))
                if stage in ("Soft-NMS", "hard NMS"):  # the detections the mask head sees
                    found = out if stage == "Soft-NMS" else out[0]
                    suppressed.setdefault(kind, {})[index] = sum(len(x) for x in found)
            return out

        return timer

    def whole(kind: str, index: int, batch: List[dict], record: bool) -> None:
        off = {"num_iters": 0, "soft_nms": {"enabled": False}}
        with heads.turbo_params(params, **(off if kind == "baseline" else {})):
            timed(kind, index, record)("whole call", lambda: model(batch))

    for rnd in range(warmup + repeats):
        record = rnd >= warmup
        for i, batch in enumerate(batches):
            kinds = ("baseline", "turbo") if (rnd + i) % 2 == 0 else ("turbo", "baseline")
            for kind in kinds:
                timer = timed(kind, i, record)
                if kind == "baseline":
                    out = baseline_stages(model, batch, timer)
                else:
                    out = turbo_stages(model, batch, params, timer)
                whole(kind, i, batch, record)
                if record and rnd == warmup:
                    counts[kind].append(sum(len(o["instances"]) for o in out))
    result: Dict[str, Dict[str, float]] = {}
    # the latency ratio as the benchmark gives it: the median of each whole call's ratio to
    # the baseline's call on the same image in the same round
    ratios = [
        t / b
        for i in range(len(batches))
        for t, b in zip(
            samples[("turbo", i)]["whole call"], samples[("baseline", i)]["whole call"], strict=True
        )
    ]
    result["ratio"] = {"whole call": statistics.median(ratios)}
    for kind in ("baseline", "turbo"):
        per_batch = [samples[(kind, i)] for i in range(len(batches))]
        stages = list(per_batch[0])
        result[kind] = {
            s: statistics.mean(statistics.median(t[s]) for t in per_batch) for s in stages
        }
        result[kind]["dets/img"] = statistics.mean(counts[kind])
        result[kind]["masked dets/img"] = statistics.mean(suppressed[kind].values())
    return result


def extra_time_split(result: Dict[str, Dict[str, float]]) -> List[Tuple[str, float]]:
    """Turbo's extra ms per image over the baseline (sums of the stages), split into: the mask
    head's second pass; the first mask pass and the paste against the baseline's one mask pass
    and paste (Soft-NMS's extra detections, less what Turbo's mask-head path saves per
    detection); Soft-NMS against hard NMS; Turbo's own code (refinement, Maskness, outputs);
    and the rest (box head, backbone: the same work in both, their difference noise)."""
    b, t = result["baseline"], result["turbo"]
    parts = [
        ("mask head: re-prediction (the second pass)", t["mask head: re-prediction"]),
        (
            "first mask pass and paste against the baseline's (more detections)",
            t["mask head: first pass"] - b.get("mask head", 0.0) + t["paste"] - b["paste"],
        ),
        ("Soft-NMS against hard NMS", t["Soft-NMS"] - b["hard NMS"]),
        (
            "Turbo's own code: refinement, Maskness, outputs",
            t["refinement"] + t["Maskness"] + t["outputs"],
        ),
    ]
    total = sum(t[s] for s in TURBO_STAGES) - sum(b[s] for s in BASELINE_STAGES if s in b)
    parts.append(("the rest: box head, backbone (the same work)", total - sum(v for _, v in parts)))
    return [("extra time, all", total)] + parts


def profile_table(result: Dict[str, Dict[str, float]]) -> str:
    """Markdown tables of a :func:`profile_stages` result: the stages side by side, and
    :func:`extra_time_split`."""
    b, t = result["baseline"], result["turbo"]
    baseline_of = {
        "mask head: first pass": "mask head",
        "Soft-NMS": "hard NMS",
    }
    rows = ["| stage | baseline ms | Turbo ms |", "|---|---|---|"]
    for s in TURBO_STAGES:
        bs = baseline_of.get(s, s)
        bv = f"{b[bs]:.1f}" if bs in b and s not in ("refinement", "Maskness", "outputs") else "-"
        if s == "mask head: re-prediction":
            bv = "-"
        label = s if bs == s else f"{s} (baseline: {bs})"
        rows.append(f"| {label} | {bv} | {t[s]:.1f} |")
    sb = sum(b[s] for s in BASELINE_STAGES if s in b)
    st = sum(t[s] for s in TURBO_STAGES)
    rows.append(f"| sum of the stages | {sb:.1f} | {st:.1f} ({st / sb:.2f}x) |")
    rows.append(
        f"| whole call, `model(batch)` | {b['whole call']:.1f} | {t['whole call']:.1f} "
        f"({result['ratio']['whole call']:.3f}x: median of per-call ratios) |"
    )
    rows.append(f"| detections per image | {b['dets/img']:.1f} | {t['dets/img']:.1f} |")
    rows.append(
        f"| detections in the (first) mask pass | {b['masked dets/img']:.1f} | "
        f"{t['masked dets/img']:.1f} |"
    )
    split = extra_time_split(result)
    total = split[0][1]
    rows += ["", "| Turbo's extra time | ms per image | share |", "|---|---|---|"]
    for name, v in split:
        share = f"{100 * v / total:.0f} %" if total > 0 else "-"
        rows.append(f"| {name} | {v:+.1f} | {share} |")
    if "mask head" in b:
        rows.append("")
        per_b = b["mask head"] / max(b["masked dets/img"], 1e-9)
        per_t = t["mask head: first pass"] / max(t["masked dets/img"], 1e-9)
        rows.append(
            f"Mask head per detection (first pass): {per_b:.2f} ms upstream, {per_t:.2f} ms on "
            f"Turbo's path ({per_t / per_b:.2f}x)"
        )
    return "\n".join(rows)
