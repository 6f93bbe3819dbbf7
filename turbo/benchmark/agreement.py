"""Whether two runs of one model give the same detections: the same weights and images on two
devices (CUDA against the CPU), detection by detection.

Two devices round differently (convolution algorithms, summation orders), so their outputs
are compared as matches, not bit for bit: each detection of one run is paired with the
detection of the other run of its class whose box overlaps it most, where each is the other's
best (:func:`match_detections`); :func:`agreement` then says how many paired and how far the
paired ones differ.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from detectron2.structures import Instances, pairwise_iou
from torch import Tensor

__all__ = ["match_detections", "agreement"]

# Weight of the score difference against the box IoU when pairing: small enough that only
# overlaps equal to a thousandth let scores decide.
_SCORE_TIE_BREAK = 1e-3


def match_detections(a: Instances, b: Instances, min_iou: float = 0.5) -> Tuple[Tensor, Tensor]:
    """Pairs of detections of one image in two runs: (K,) rows of ``a`` and (K,) rows of ``b``
    that are each other's best match among the detections of their class (highest box IoU,
    less a thousandth of their score difference; ties: the earlier row), with a box IoU of at
    least ``min_iou``.

    ``a``, ``b``: ``Instances`` with ``pred_boxes`` (XYXY, one image frame), ``scores`` and
    ``pred_classes``."""
    if not 0.0 < min_iou <= 1.0:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    empty = torch.zeros(0, dtype=torch.int64)
    if len(a) == 0 or len(b) == 0:
        return empty, empty
    boxes_b = b.pred_boxes.to(a.pred_boxes.device)
    iou = pairwise_iou(a.pred_boxes, boxes_b)  # (Na, Nb)
    same = a.pred_classes[:, None] == b.pred_classes.to(a.pred_classes.device)[None, :]
    # Soft-NMS's decayed duplicates may share one box exactly (refined boxes are whole
    # pixels): among equal overlaps the closer score decides
    score_gap = (a.scores[:, None] - b.scores.to(a.scores.device)[None, :]).abs()
    closeness = torch.where(same, iou - _SCORE_TIE_BREAK * score_gap, torch.full_like(iou, -2.0))
    best_b = closeness.argmax(dim=1)  # (Na,)
    best_a = closeness.argmax(dim=0)  # (Nb,)
    rows = torch.arange(len(a), device=iou.device)
    mutual = (best_a[best_b] == rows) & same[rows, best_b] & (iou[rows, best_b] >= min_iou)
    return rows[mutual].cpu(), best_b[mutual].cpu()


def agreement(pairs: Sequence[Tuple[Instances, Instances]], min_iou: float = 0.5) -> Dict:
    """How far two runs of a model agree over images: per image the detections of run a and of
    run b (``Instances`` in the same frame, e.g. Detectron2's outputs in the original image;
    ``pred_masks``, where present, pasted (H, W) masks or (1, M, M) probabilities alike).

    Returns a dict: "detections" (a, b) totals; "matched" pairs (:func:`match_detections`);
    "box_max_px" the largest difference of a paired box coordinate; "score_max" the largest
    score difference of a pair; "mask_iou_min" the lowest IoU of a pair's masks binarised at
    0.5 (1.0 where no pair or no mask: nothing to differ)."""
    dets_a = dets_b = matched = 0
    box_max = score_max = 0.0
    mask_iou_min = 1.0
    for a, b in pairs:
        a, b = a.to("cpu"), b.to("cpu")
        dets_a, dets_b = dets_a + len(a), dets_b + len(b)
        ia, ib = match_detections(a, b, min_iou)
        matched += len(ia)
        if len(ia) == 0:
            continue
        box_diff = a.pred_boxes.tensor[ia] - b.pred_boxes.tensor[ib]
        box_max = max(box_max, float(box_diff.abs().max()))
        score_max = max(score_max, float((a.scores[ia] - b.scores[ib]).abs().max()))
        if a.has("pred_masks") and b.has("pred_masks"):
            ma = (a.pred_masks[ia].float() >= 0.5).flatten(1)
            mb = (b.pred_masks[ib].float() >= 0.5).flatten(1)
            inter = (ma & mb).sum(dim=1).float()
            union = (ma | mb).sum(dim=1).float()
            iou = inter / union.clamp(min=1)
            iou = torch.where(union > 0, iou, torch.ones_like(iou))  # two empty masks agree
            mask_iou_min = min(mask_iou_min, float(iou.min()))
    return {
        "detections": (dets_a, dets_b),
        "matched": matched,
        "box_max_px": box_max,
        "score_max": score_max,
        "mask_iou_min": mask_iou_min,
    }
