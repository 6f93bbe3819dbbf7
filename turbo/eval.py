"""Side-by-side evaluation of inference variants of one trained model (the benchmark's engine).

All variants of a model share its weights and differ only in their :class:`TurboParams`, so
for accuracy the backbone and RPN run once per image and every variant's ROI heads run on
the same features and proposals; each variant has its own ``COCOEvaluator``. Latency is
measured separately on whole ``model(inputs)`` calls, variants alternating within each repeat.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import GeneralizedRCNN

from .config import TurboParams
from .heads import _TurboInference

__all__ = ["Variant", "standard_variants", "evaluate_variants", "measure_latency"]


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: a model (by key) run with ``params``."""

    name: str
    model: str
    params: TurboParams


def standard_variants(base: TurboParams, model: str, cycles: Sequence[int] = (1, 2, 3),
                      repredict_ious: Sequence[float] = (), prefix: str = "",
                      recipe: Optional[TurboParams] = None) -> List[Variant]:
    """baseline, + Soft-NMS, + Turbo, + Turbo + Soft-NMS, then Turbo + Soft-NMS with each
    number of ``cycles`` beyond 1, and with each adaptive ``REPREDICT_IOU`` (1 cycle; the
    masks not re-predicted either keep their box or are resampled into the refined one).
    ``recipe``: also a row with these (published) thresholds, where ``base`` differs."""
    r = dataclasses.replace
    rows = [
        Variant(prefix + "baseline", model, r(base, num_iters=0, soft_nms=False)),
        Variant(prefix + "+ Soft-NMS", model, r(base, num_iters=0, soft_nms=True)),
        Variant(prefix + "+ Turbo", model, r(base, num_iters=1, soft_nms=False)),
        Variant(prefix + "+ Turbo + Soft-NMS", model, r(base, num_iters=1, soft_nms=True)),
    ]
    if recipe is not None and recipe != r(base, num_iters=1, soft_nms=True):
        rows.append(Variant(prefix + "+ Turbo + Soft-NMS, published recipe", model,
                            r(recipe, num_iters=1, soft_nms=True)))
    for c in cycles:
        if c != 1:
            rows.append(Variant(f"{prefix}+ Turbo x{c} + Soft-NMS", model,
                                r(base, num_iters=c, soft_nms=True)))
    for t in repredict_ious:
        for resample in (False, True):
            how = ", others resampled" if resample else ""
            rows.append(Variant(f"{prefix}+ Turbo (re-predict IoU<{t:g}{how}) + Soft-NMS", model,
                                r(base, num_iters=1, soft_nms=True, repredict_iou=t,
                                  resample_masks=resample)))
    return rows


def _set_params(model: GeneralizedRCNN, params: TurboParams) -> None:
    if not isinstance(model.roi_heads, _TurboInference):
        raise TypeError(f"model.roi_heads is {type(model.roi_heads).__name__}, not a turbo head: "
                        "set MODEL.ROI_HEADS.NAME to TurboROIHeads or TurboCascadeROIHeads")
    model.roi_heads.turbo = params


@torch.no_grad()
def evaluate_variants(
    models: Dict[str, GeneralizedRCNN],
    variants: Sequence[Variant],
    data_loader: Iterable[List[dict]],
    dataset_name: str,
    progress: Optional[Callable[[int], None]] = None,
    keep_outputs: int = 0,
) -> Dict[str, dict]:
    """COCO box and mask metrics of every variant on every image of ``data_loader``.

    Returns {variant name: {"bbox": {...}, "segm": {...}, "dets_per_image": float,
    "outputs": [first ``keep_outputs`` per-image outputs]}}.
    """
    evaluators = {v.name: COCOEvaluator(dataset_name, tasks=("bbox", "segm"), distributed=False)
                  for v in variants}
    for e in evaluators.values():
        e.reset()
    num_dets = {v.name: 0 for v in variants}
    kept: Dict[str, list] = {v.name: [] for v in variants}
    num_images = 0
    for inputs in data_loader:
        for key, model in models.items():
            images = model.preprocess_image(inputs)
            features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, features, None)
            for v in variants:
                if v.model != key:
                    continue
                _set_params(model, v.params)
                results, _ = model.roi_heads(images, features, proposals, None)
                outputs = GeneralizedRCNN._postprocess(results, inputs, images.image_sizes)
                evaluators[v.name].process(inputs, outputs)
                num_dets[v.name] += sum(len(o["instances"]) for o in outputs)
                if len(kept[v.name]) < keep_outputs:
                    kept[v.name].extend(
                        {"input": i, "instances": o["instances"].to("cpu")}
                        for i, o in zip(inputs, outputs))
        num_images += len(inputs)
        if progress is not None:
            progress(num_images)
    out = {}
    for v in variants:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summaries
            res = evaluators[v.name].evaluate()
        out[v.name] = {
            "bbox": dict(res["bbox"]),
            "segm": dict(res["segm"]),
            "dets_per_image": num_dets[v.name] / max(num_images, 1),
            "outputs": kept[v.name][:keep_outputs],
        }
    return out


@torch.no_grad()
def measure_latency(
    models: Dict[str, GeneralizedRCNN],
    variants: Sequence[Variant],
    batches: Sequence[List[dict]],
    repeats: int = 3,
    warmup: int = 2,
) -> Dict[str, float]:
    """Median seconds of a whole ``model(inputs)`` call per variant.

    Each repeat visits every batch and, for each batch, every variant in an order rotated by
    one per batch, so that drifts of the machine affect all variants alike. ``warmup`` calls
    per variant come first and are not counted.
    """
    sync = torch.cuda.synchronize if any(
        next(m.parameters()).is_cuda for m in models.values()) else (lambda: None)
    for v in variants:
        _set_params(models[v.model], v.params)
        for b in list(batches)[: max(warmup, 0)]:
            models[v.model](b)
    times: Dict[str, List[float]] = {v.name: [] for v in variants}
    n = len(variants)
    for rep in range(repeats):
        for bi, b in enumerate(batches):
            shift = (rep * len(batches) + bi) % n
            for v in list(variants[shift:]) + list(variants[:shift]):
                model = models[v.model]
                _set_params(model, v.params)
                sync()
                t0 = time.perf_counter()
                model(b)
                sync()
                times[v.name].append(time.perf_counter() - t0)
    return {k: statistics.median(t) for k, t in times.items()}
