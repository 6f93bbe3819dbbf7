"""Side-by-side COCO evaluation of inference variants of trained models (the benchmark engine).

All variants of a model share its weights and differ only in their :class:`TurboParams`, so
the shared prefix (backbone and proposals) runs once per batch and model, and every variant's
ROI heads run on the same features and proposals, each variant with its own
``COCOEvaluator``.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from detectron2.evaluation import COCOEvaluator
from torch import nn

from .models import run_heads, run_prefix, turbo_heads_of
from .variants import Variant

__all__ = ["evaluate_variants"]


@torch.no_grad()
def evaluate_variants(
    models: Dict[str, nn.Module],
    variants: Sequence[Variant],
    data_loader: Iterable[List[dict]],
    dataset_name: str,
    progress: Optional[Callable[[int], None]] = None,
    keep_outputs: int = 0,
    tasks: Sequence[str] = ("bbox", "segm"),
) -> Dict[str, dict]:
    """COCO metrics of every variant on every image of ``data_loader``.

    Args:
        models: name -> model with turbo ROI heads.
        variants: the rows; each names its model.
        progress: called with the number of images done after each batch.
        keep_outputs: also return the first so many per-image outputs of each variant.
        tasks: ``COCOEvaluator`` tasks ("bbox" alone for box-only models).

    Returns:
        {variant name: {task: {"AP": ..., ...}, "dets_per_image": float, "outputs": [
        {"input": dataset dict, "instances": Instances on CPU}, ...]}}.
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
            for v in variants:
                if v.model != key:
                    continue
                with heads.turbo_params(v.params):
                    outputs = run_heads(model, prefix, batch)
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
    return results
