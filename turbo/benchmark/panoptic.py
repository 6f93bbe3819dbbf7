"""Panoptic quality of a Panoptic FPN under Turbo settings and instance thresholds of its merge.

Detectron2's Panoptic FPN merges its instances into the semantic segmentation with
``combine_semantic_and_instance_outputs``, which drops instances scored below
``MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH``; Turbo's Maskness rescoring lowers
every score. Each setting runs the model once over the images; each threshold then merges its
instances and semantic labels again with that same Detectron2 function (the model's own
overlap and stuff-area limits) and scores the result with ``COCOPanopticEvaluator``.
``scripts/panoptic_merge.py`` is its command line.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import torch
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator
from detectron2.modeling.meta_arch.panoptic_fpn import (
    PanopticFPN,
    combine_semantic_and_instance_outputs,
)
from torch import nn

from ..build import turbo_heads_of

__all__ = ["PQ_KEYS", "SETTINGS", "evaluate_merge"]

# The rows of the PQ table: the evaluator's keys of all, things, stuff.
PQ_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")

# Turbo settings: name -> changes to the head's own parameters (``heads.turbo_params``).
# "turbo, no rescoring" merges Turbo's boxes and masks on the scores before Maskness rescoring
# (a Maskness weight of 0 leaves the detection stage's scores as they are).
SETTINGS: Dict[str, dict] = {
    "baseline": {"num_iters": 0, "soft_nms": {"enabled": False}},
    "turbo": {},
    "turbo, no rescoring": {"maskness_weight": 0.0},
}


@torch.no_grad()
def evaluate_merge(
    model: nn.Module,
    data_loader: Iterable[List[dict]],
    dataset_name: str,
    thresholds: Sequence[float],
    settings: Optional[Mapping[str, dict]] = None,
    progress: Optional[Callable[[str, int], None]] = None,
) -> Dict[str, dict]:
    """PQ / SQ / RQ (all, things, stuff) of ``model`` (a ``PanopticFPN`` with turbo ROI heads)
    on ``data_loader``'s images of ``dataset_name``, for every setting and merge threshold.

    Args:
        thresholds: instance score thresholds of the merge
            (``INSTANCES_CONFIDENCE_THRESH`` values).
        settings: name -> changes to the head's parameters (default :data:`SETTINGS`).
        progress: called with the setting's name and the number of images done after each
            batch.

    Returns:
        {setting: {"bbox": {...}, "segm": {...} (COCO AP of its instances, at no score
        threshold), "merge": {threshold: {PQ key: value, "things_per_image": thing segments
        kept per image}}}}.
    """
    if not isinstance(model, PanopticFPN):
        raise TypeError(f"evaluate_merge needs a PanopticFPN, got {type(model).__name__}")
    heads = turbo_heads_of(model)
    settings = SETTINGS if settings is None else settings
    out: Dict[str, dict] = {}
    for name, changes in settings.items():
        coco = COCOEvaluator(dataset_name, tasks=("bbox", "segm"), distributed=False)
        panoptic = {t: COCOPanopticEvaluator(dataset_name) for t in thresholds}
        things = dict.fromkeys(thresholds, 0)
        coco.reset()
        for e in panoptic.values():
            e.reset()
        done = 0
        with heads.turbo_params(**changes):
            for batch in data_loader:
                outputs = model(batch)
                coco.process(batch, outputs)
                for t in thresholds:
                    merged = [_merge(model, o, t) for o in outputs]
                    things[t] += sum(s["isthing"] for m in merged for s in m["panoptic_seg"][1])
                    panoptic[t].process(batch, merged)
                done += len(batch)
                if progress is not None:
                    progress(name, done)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' and panopticapi's prints
            row = dict(coco.evaluate())
            merge = {}
            for t in thresholds:
                pq = panoptic[t].evaluate()["panoptic_seg"]
                merge[t] = {**{k: pq[k] for k in PQ_KEYS}, "things_per_image": things[t] / done}
        out[name] = {"bbox": row["bbox"], "segm": row["segm"], "merge": merge}
    return out


def _merge(model: PanopticFPN, output: dict, threshold: float) -> dict:
    """``{"panoptic_seg": (ids (H, W) int32, segments)}`` of one image's post-processed
    outputs, merged as ``model`` merges them but with instance threshold ``threshold``."""
    return {
        "panoptic_seg": combine_semantic_and_instance_outputs(
            output["instances"],
            output["sem_seg"].argmax(dim=0),
            model.combine_overlap_thresh,
            model.combine_stuff_area_thresh,
            threshold,
        )
    }
