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
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import GeneralizedRCNN

from .config import TurboParams
from .heads import _TurboInference

__all__ = ["Variant", "standard_variants", "evaluate_variants", "measure_latency",
           "count_host_syncs"]


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: a model (by key) run with ``params``."""

    name: str
    model: str
    params: TurboParams


def standard_variants(base: TurboParams, model: str, cycles: Sequence[int] = (1, 2, 3),
                      repredict_ious: Sequence[float] = (), prefix: str = "",
                      recipe: Optional[TurboParams] = None,
                      repredict_min_scores: Sequence[float] = ()) -> List[Variant]:
    """baseline, + Soft-NMS, + Turbo, + Turbo + Soft-NMS, then Turbo + Soft-NMS with each
    number of ``cycles`` beyond 1, with each adaptive ``REPREDICT_IOU`` (1 cycle; the
    masks not re-predicted either keep their box or are resampled into the refined one), and
    with each ``REPREDICT_MIN_SCORE`` (1 cycle, the others resampled).
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
    for t in repredict_min_scores:
        rows.append(Variant(f"{prefix}+ Turbo (re-predict score>={t:g}, others resampled) "
                            "+ Soft-NMS", model,
                            r(base, num_iters=1, soft_nms=True, repredict_min_score=t,
                              resample_masks=True)))
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


# Operators that make the host wait for the device (on CUDA): reading a value (item, bool),
# outputs whose size depends on values (nonzero, boolean indexing, unique, masked_select,
# repeat_interleave without output_size: all call one of these inside, which the profiler
# records), bincount (reads the max), equal, and tensors made from host data (copied to the
# device without non_blocking).
SYNC_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero",
    "aten::nonzero_numpy", "aten::argwhere", "aten::masked_select", "aten::_unique",
    "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
    "aten::unique_dim_consecutive", "aten::bincount", "aten::equal", "aten::allclose",
    "aten::lift_fresh",
})
# Tensor methods that read device memory on the host without an operator the profiler sees
# on CPU tensors.
_SYNC_METHODS = ("tolist", "numpy", "cpu")
_MASK_HEAD = "turbo::mask_head"


def _inside(event, name: str) -> bool:
    e = event.cpu_parent
    while e is not None:
        if e.name == name:
            return True
        e = e.cpu_parent
    return False


@contextlib.contextmanager
def count_host_syncs(roi_heads) -> Iterator[List[str]]:
    """Collects the host-sync calls made while the context is open (a list of operator or
    ``Tensor.<method>`` names, filled when the context closes), leaving out those made inside
    the mask head (Detectron2's ``_forward_mask``: its pooler groups boxes by FPN level with
    ``nonzero``). Works on CPU too: it records the calls that would make a CUDA host wait.

    Not thread-safe: it patches ``torch.Tensor.tolist``/``numpy``/``cpu`` while open. The
    profiler sees the operators; the patched methods see host reads of CPU tensors, which
    call no operator.
    """
    found: List[str] = []
    depth = [0]
    forward_mask = roi_heads._forward_mask

    def mask_head(*args, **kwargs):
        depth[0] += 1
        try:
            with record_function(_MASK_HEAD):
                return forward_mask(*args, **kwargs)
        finally:
            depth[0] -= 1

    def spy(name, method):
        def wrapper(self, *args, **kwargs):
            if depth[0] == 0:
                found.append(f"Tensor.{name}")
            return method(self, *args, **kwargs)
        return wrapper

    methods = {name: getattr(torch.Tensor, name) for name in _SYNC_METHODS}
    roi_heads._forward_mask = mask_head
    try:
        for name, method in methods.items():
            setattr(torch.Tensor, name, spy(name, method))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            yield found
    finally:
        for name, method in methods.items():
            setattr(torch.Tensor, name, method)
        del roi_heads._forward_mask  # back to the class's method
    found.extend(e.name for e in prof.events()
                 if e.name in SYNC_OPS and not _inside(e, _MASK_HEAD))
