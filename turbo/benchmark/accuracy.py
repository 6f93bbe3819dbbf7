"""Side-by-side COCO evaluation of inference variants of trained models (the benchmark engine).

All variants of a model share its weights and differ only in their :class:`TurboParams`, so
the shared prefix (backbone and proposals) runs once per batch and model, the detection stage
and the first mask prediction once per batch, model and suppression (hard NMS, or each
Soft-NMS setting), and each variant runs the rest of its ROI heads' own flow on the same
detections and first masks, each with its own ``COCOEvaluator``. The outputs are those of
``model(batch)`` under each variant's parameters (tested).
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Instances
from torch import Tensor, nn

from ..build import turbo_heads_of
from .runner import postprocess, run_prefix
from .variants import Variant

__all__ = ["evaluate_variants"]


@contextlib.contextmanager
def _given_stages(heads, detections: List[Instances], first_masks: Optional[Tensor]):
    """Inside the block, the heads' detection stage returns ``detections`` and their first
    masks are ``first_masks``: computed once, they serve every variant of the same suppression
    (instance attributes shadow the two methods; the heads' own flow runs the rest)."""
    heads.detect = lambda features, proposals: detections
    heads.first_masks = lambda features, instances: first_masks
    try:
        yield
    finally:
        del heads.detect, heads.first_masks


@torch.no_grad()
def evaluate_variants(
    models: Dict[str, nn.Module],
    variants: Sequence[Variant],
    data_loader: Iterable[List[dict]],
    dataset_name: str,
    progress: Optional[Callable[[int], None]] = None,
    keep_outputs: int = 0,
    tasks: Sequence[str] = ("bbox", "segm"),
    keep_predictions: bool = False,
) -> Dict[str, dict]:
    """COCO metrics of every variant on every image of ``data_loader``.

    Args:
        models: name -> model with turbo ROI heads.
        variants: the rows; each names its model.
        progress: called with the number of images done after each batch.
        keep_outputs: also return the first so many per-image outputs of each variant.
        tasks: ``COCOEvaluator`` tasks ("bbox" alone for box-only models).
        keep_predictions: also return each variant's detections in COCO-json form (what its
            evaluator scored; for :mod:`turbo.benchmark.breakdown`).

    Returns:
        {variant name: {task: {"AP": ..., ...}, "dets_per_image": float, "outputs": [
        {"input": dataset dict, "instances": Instances on CPU}, ...], "predictions": [COCO
        json detection, ...] (with ``keep_predictions``)}}.
    """
    evaluators = {
        v.name: COCOEvaluator(dataset_name, tasks=tuple(tasks), distributed=False) for v in variants
    }
    for e in evaluators.values():
        e.reset()
    num_dets = {v.name: 0 for v in variants}
    kept: Dict[str, list] = {v.name: [] for v in variants}
    image_ids: List[int] = []
    for batch in data_loader:
        for key, model in models.items():
            heads = turbo_heads_of(model)
            prefix = run_prefix(model, batch)
            # suppression -> (detections, their first masks)
            stages: Dict[object, Tuple[List[Instances], Optional[Tensor]]] = {}
            for v in variants:
                if v.model != key:
                    continue
                with heads.turbo_params(v.params) as p:
                    suppression = p.soft_nms if p.soft_nms.enabled else None
                    if suppression not in stages:
                        found = heads.detect(prefix.features, prefix.proposals)
                        first = heads.first_masks(prefix.features, found) if heads.mask_on else None
                        stages[suppression] = (found, first)
                    found, first = stages[suppression]
                    # the heads add fields to what they are given, and Detectron2's
                    # postprocessing rescales boxes in place: each variant gets its own copies
                    detections = [
                        Instances(x.image_size, **{k: t.clone() for k, t in x.get_fields().items()})
                        for x in found
                    ]
                    with _given_stages(heads, detections, first):
                        results = heads._forward_turbo(prefix.features, prefix.proposals)
                outputs = postprocess(results, batch, prefix.images.image_sizes)
                evaluators[v.name].process(batch, outputs)
                num_dets[v.name] += sum(len(o["instances"]) for o in outputs)
                if len(kept[v.name]) < keep_outputs:
                    kept[v.name].extend(
                        {"input": i, "instances": o["instances"].to("cpu")}
                        for i, o in zip(batch, outputs)
                    )
        image_ids += [x["image_id"] for x in batch]
        if progress is not None:
            progress(len(image_ids))
    results = {}
    for v in variants:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summaries
            # only the images seen: a loader over part of a dataset is scored on that part
            res = evaluators[v.name].evaluate(img_ids=image_ids)
        results[v.name] = {
            **{task: dict(res[task]) for task in tasks},
            "dets_per_image": num_dets[v.name] / max(len(image_ids), 1),
            "outputs": kept[v.name][:keep_outputs],
        }
        if keep_predictions:
            # COCOEvaluator keeps what it scored (per image, in COCO-json form) and has no
            # public accessor; converting the outputs again would re-encode every mask
            results[v.name]["predictions"] = [
                d for p in evaluators[v.name]._predictions for d in p.get("instances", [])
            ]
    return results
