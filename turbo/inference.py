"""The stages of Turbo-Inference on detections, independent of any ``nn.Module``.

1. detection: :func:`soft_nms_detections`, the Soft-NMS counterpart of Detectron2's
   ``fast_rcnn_inference``;
2. vanilla segmentation: the mask head on the detected boxes (the caller's ``predict``);
3. :func:`turbo_cycles`: turbo detection (mask-to-box refinement) and turbo segmentation
   (the mask head again on the refined boxes), ``num_iters`` times, then Maskness rescoring.

Rows of every tensor are the detections of one or more images, grouped by image in image
order; boxes are XYXY in the resized input image of their row (``Instances.image_size``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from detectron2.layers import cat
from detectron2.structures import Boxes, Instances
from torch import Tensor

from .config import SoftNMSParams, TurboParams
from .ops import (
    batched_soft_nms,
    edge_normalized,
    finite_probs,
    mask_boxes,
    maskness,
    piecewise_linear,
    resample_masks,
)

__all__ = [
    "Detections",
    "TurboResult",
    "MaskPredictor",
    "soft_nms_detections",
    "turbo_cycles",
    "per_image_instances",
    "image_slices",
    "descending_order",
]

# predict(boxes (n, 4), classes (n,), counts) -> (n, M, M) finite mask probabilities of the
# mask head in ``boxes``, rows grouped by image with ``counts`` (rows per image).
MaskPredictor = Callable[[Tensor, Tensor, List[int]], Tensor]


@dataclass(frozen=True)
class Detections:
    """N detections of one or more images, rows grouped by image in image order."""

    boxes: Tensor  # (N, 4) XYXY in the resized input image of each row
    classes: Tensor  # (N,) int64
    scores: Tensor  # (N,) finite
    image_hw: Tensor  # (N, 2) int64 height and width of each row's image
    image_index: Tensor  # (N,) int64 image of each row
    # rows per image; with one image only its length is used (a trace keeps the row count
    # dynamic, not this number)
    counts: Tuple[int, ...]

    @classmethod
    def from_instances(cls, instances: Sequence[Instances]) -> Detections:
        """From per-image ``Instances`` with ``pred_boxes``, ``pred_classes``, ``scores``.

        Scores are made finite (``turbo.ops.finite_probs``). Built from Python ints on the
        device: no host sync.
        """
        counts = tuple(len(x) for x in instances)
        boxes = cat([x.pred_boxes.tensor for x in instances])
        classes = cat([x.pred_classes for x in instances])
        dev = boxes.device
        sizes = [x.image_size for x in instances]
        if len(instances) == 1:
            # from the rows themselves, not from ``counts``: a trace keeps their number
            # dynamic (the image size may be traced too)
            image_index = torch.zeros_like(classes)
            size = sizes[0]  # (h, w) Python ints, or a (2,) tensor under tracing
            image_hw = torch.stack([image_index + size[0], image_index + size[1]], dim=1)
        else:
            image_index = _per_row(range(len(counts)), counts, dev)
            image_hw = torch.stack(
                [
                    _per_row([h for h, _ in sizes], counts, dev),
                    _per_row([w for _, w in sizes], counts, dev),
                ],
                dim=1,
            )
        return cls(
            boxes=boxes,
            classes=classes,
            scores=finite_probs(cat([x.scores for x in instances])),
            image_hw=image_hw,
            image_index=image_index,
            counts=counts,
        )


@dataclass(frozen=True)
class TurboResult:
    """The detections after the turbo cycles and Maskness rescoring (rows as in the input)."""

    boxes: Tensor  # (N, 4) output boxes, XYXY
    # (N, M, M) masks predicted (or resampled) in ``boxes``: probabilities, or with
    # ``mask_edge`` "half_interior" each divided by its level (``turbo.ops.edge_normalized``)
    masks: Tensor
    scores: Tensor  # (N,) rescored
    maskness: Tensor  # (N,) Maskness of the masks it was read from
    found: Tensor  # (N,) bool: every cycle found mask pixels for the row

    def to_instances(
        self,
        detections: Detections,
        image_sizes: Sequence[Tuple[int, int]],
        drop_empty: bool = False,
        score_thresh: Optional[float] = None,
    ) -> List[Instances]:
        """Per image ``Instances`` (``pred_boxes``, ``scores``, ``pred_classes``,
        ``pred_masks`` (Ni, 1, M, M), ``maskness``) sorted by score; ``drop_empty`` leaves out
        the rows without mask pixels (``empty_mask`` "drop"), ``score_thresh`` those whose
        score is not above it (as Detectron2's ``SCORE_THRESH_TEST`` leaves out)."""
        keep = self.found if drop_empty else None
        if score_thresh is not None:
            above = self.scores > score_thresh
            keep = above if keep is None else keep & above
        return per_image_instances(
            image_sizes,
            detections.counts,
            keep=keep,
            pred_boxes=Boxes(self.boxes),
            scores=self.scores,
            pred_classes=detections.classes,
            pred_masks=self.masks[:, None],
            maskness=self.maskness,
        )


def soft_nms_detections(
    boxes: List[Tensor],
    scores: List[Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    topk_per_image: int,
    soft_nms: SoftNMSParams,
) -> List[Instances]:
    """Soft-NMS counterpart of Detectron2's ``fast_rcnn_inference``, batched over images.

    Args:
        boxes: per image (Ri, K * 4) or (Ri, 4) box-head boxes, XYXY in the resized input image.
        scores: per image (Ri, K + 1) class probabilities, background last.
        image_shapes: per image (h, w) of the resized input image.
        score_thresh: candidates at or below this score are discarded before suppression, and
            decayed scores are kept down to ``max(soft_nms.min_score, score_thresh)``: the
            user's threshold wins over Soft-NMS's own minimum.
        topk_per_image: detections kept per image (< 0 keeps all).
        soft_nms: the suppression's settings.

    Returns:
        per image ``Instances`` with ``pred_boxes``, ``scores`` (decayed) and ``pred_classes``,
        sorted by score, descending. Non-finite boxes or scores are dropped as upstream does.
    """
    all_boxes, all_scores, all_classes, all_images = [], [], [], []
    num_classes = scores[0].shape[1] - 1 if len(scores) else 0
    for i, (b, s, shape) in enumerate(zip(boxes, scores, image_shapes)):
        valid = torch.isfinite(b).all(dim=1) & torch.isfinite(s).all(dim=1)
        b, s = b[valid], s[valid][:, :-1]
        num_reg = b.shape[1] // 4  # 1 (class-agnostic regression) or K
        b = Boxes(b.reshape(-1, 4))
        b.clip(shape)
        b = b.tensor.view(s.shape[0], num_reg, 4)
        rows, cls = (s > score_thresh).nonzero(as_tuple=True)
        all_boxes.append(b[rows, cls % num_reg])  # column 0 when class-agnostic
        all_scores.append(s[rows, cls])
        all_classes.append(cls)
        all_images.append(torch.full_like(cls, i))
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    b, s, c, im = (
        cat(x) if x else torch.zeros(0, device=device)
        for x in (all_boxes, all_scores, all_classes, all_images)
    )
    one_image = len(image_shapes) == 1
    keep, kept_scores = batched_soft_nms(
        b,
        s,
        im * num_classes + c,
        method=soft_nms.method,
        iou_threshold=soft_nms.iou_thresh,
        sigma=soft_nms.sigma,
        min_score=max(soft_nms.min_score, score_thresh),
        topk=topk_per_image,
        topk_by=None if one_image else im,
    )
    if one_image:  # no count to read back (``image_slices``): a trace keeps it dynamic
        counts = [keep.shape[0]]
    else:
        # ``keep`` is sorted by score over the whole batch, at most ``topk_per_image`` per
        # image; a stable sort by image keeps that order inside each image.
        im_kept = im[keep]
        by_image = torch.sort(im_kept, stable=True).indices
        keep, kept_scores = keep[by_image], kept_scores[by_image]
        counts = torch.bincount(im_kept, minlength=len(image_shapes)).tolist()  # one host sync
    return per_image_instances(
        image_shapes,
        counts,
        sort=False,
        pred_boxes=Boxes(b[keep]),
        scores=kept_scores,
        pred_classes=c[keep],
    )


def turbo_cycles(
    params: TurboParams,
    detections: Detections,
    masks: Tensor,
    predict: MaskPredictor,
) -> TurboResult:
    """Turbo detection and turbo segmentation, ``params.num_iters`` times, then rescoring.

    Args:
        params: resolved parameters (no recipe key unset).
        detections: N detections.
        masks: (N, M, M) finite mask probabilities predicted in ``detections.boxes``.
        predict: the mask head (:data:`MaskPredictor`).

    Each cycle refines every box to the tight box of its pasted mask
    (``turbo.ops.mask_boxes``, fused with the input box by ``box_fusion``), then predicts
    the mask again in the refined box: for every row, or with ``repredict_topk`` k > 0 for
    each image's k highest-scoring rows (the others take the refined box, their mask
    resampled into it). With ``repredict_scale`` s > 1 the head predicts in the refined box
    scaled by s about its centre, and that mask is resampled into the refined box. With
    ``mask_fusion`` f, a re-predicted mask is f * (the earlier mask resampled into the refined
    box) + (1 - f) * the new one. Finally scores are rescored by the Maskness of the first
    masks (``maskness_source`` "first"), or by that of the first and then of the output masks
    ("both"; the ``maskness`` returned is then the output masks'); with ``rescore_agreement``,
    also by the agreement (soft IoU) of each re-predicted mask with the earlier mask resampled
    into its box, in the last cycle that re-predicted it: each factor is ``(1 - w) + w *
    value`` with the recipe's Maskness weight w, so scores stay in [0, 1]; then ``score_map``
    maps them (strictly increasing, [0, 1] onto [0, 1]). With ``mask_edge``
    "half_interior" the output masks are then each divided by their interior level
    (``turbo.ops.edge_normalized``), those with a cell at or above ``box_thresh``.

    Host syncs: none (the rows re-predicted under ``repredict_topk`` are known from the
    counts).
    """
    p = params
    if p.unresolved:
        raise ValueError(f"turbo_cycles needs resolved parameters; unset: {p.unresolved}")
    boxes, classes, counts = detections.boxes, detections.classes, list(detections.counts)
    first_masks = masks
    found_all = torch.ones_like(detections.scores, dtype=torch.bool)
    agreement = torch.ones_like(detections.scores)
    need_earlier = p.mask_fusion > 0 or p.rescore_agreement
    if p.adaptive:  # the same rows every cycle: the ranks are those of the detection scores
        rows, selected_counts = _top_rows(detections, p.repredict_topk)
    for _ in range(p.num_iters):
        # turbo detection: mask-to-box refinement
        mask_box, found = mask_boxes(masks, boxes, detections.image_hw, p.box_thresh)
        found_all = found_all & found
        refined = p.box_fusion * boxes + (1.0 - p.box_fusion) * mask_box
        # turbo segmentation: the mask head again, in the refined boxes
        if not p.adaptive:  # every row: no data-dependent shapes, no host sync
            rows = None
            earlier = resample_masks(masks, boxes, refined) if need_earlier else None
            new = _predict_scaled(predict, p.repredict_scale, refined, classes, counts)
            boxes = refined
        else:
            # every row takes its refined box; the masks not re-predicted are resampled into it
            masks = resample_masks(masks, boxes, refined)
            earlier, boxes = masks[rows], refined
            new = _predict_scaled(
                predict, p.repredict_scale, refined[rows], classes[rows], selected_counts
            )
        if p.rescore_agreement:
            agree = _soft_iou(earlier, new)
            agreement = agree if rows is None else agreement.index_put((rows,), agree)
        if p.mask_fusion > 0:
            new = torch.lerp(new, earlier, p.mask_fusion)
        masks = new if rows is None else masks.index_put((rows,), new)

    w = p.maskness_weight
    m = maskness(first_masks if p.maskness_source == "first" else masks, p.maskness_thresh)
    scores = detections.scores * ((1.0 - w) + w * m)
    if p.maskness_source == "both":  # the first masks' Maskness rescores once more
        scores = scores * ((1.0 - w) + w * maskness(first_masks, p.maskness_thresh))
    if p.rescore_agreement:
        scores = scores * ((1.0 - w) + w * agreement)
    if p.score_map:  # strictly increasing: the order, hence AP, is unchanged
        scores = piecewise_linear(scores, p.score_map)
    if p.mask_edge != "probability":  # after Maskness, which reads probabilities
        masks = edge_normalized(masks, p.box_thresh)
    return TurboResult(boxes=boxes, masks=masks, scores=scores, maskness=m, found=found_all)


def _predict_scaled(
    predict: MaskPredictor, scale: float, boxes: Tensor, classes: Tensor, counts: List[int]
) -> Tensor:
    """(n, M, M) masks in ``boxes``, predicted in ``boxes`` scaled by ``scale`` about their
    centres and resampled into ``boxes`` (``scale`` 1: predicted in ``boxes``)."""
    if scale == 1.0:
        return predict(boxes, classes, counts)
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    half = 0.5 * scale * (boxes[:, 2:] - boxes[:, :2])
    wide = torch.cat([centre - half, centre + half], dim=1)
    return resample_masks(predict(wide, classes, counts), wide, boxes)


def _soft_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N,) soft IoU of two stacks of (N, M, M) probability masks: sum(min) / sum(max), 1
    where both are empty."""
    inter = torch.minimum(a, b).flatten(1).sum(dim=1)
    union = torch.maximum(a, b).flatten(1).sum(dim=1)
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.ones_like(union))


def per_image_instances(
    image_sizes: Sequence[Tuple[int, int]],
    counts: Sequence[int],
    keep: Optional[Tensor] = None,
    sort: bool = True,
    **fields,
) -> List[Instances]:
    """Rows (grouped by image with ``counts``) split into per-image ``Instances``.

    ``fields``: name -> tensor (or ``Boxes``) of N rows; ``keep``: optional (N,) bool of the
    rows to keep; ``sort``: sort each image's rows by ``scores``, descending (ties keep the
    row order).
    """
    results = []
    for size, sl in zip(image_sizes, image_slices(counts)):
        r = Instances(size, **{k: v[sl] for k, v in fields.items()})
        if keep is not None:  # one read of the kept rows (a host sync), not one per field
            r = r[keep[sl].nonzero().squeeze(1)]
        if sort:
            r = r[descending_order(r.scores)]
        results.append(r)
    return results


def image_slices(counts: Sequence[int]) -> List[slice]:
    """The rows of each image, for rows grouped by image with ``counts`` (rows per image).

    With one image: all rows, ``counts`` unread. A count is a Python int read from a tensor,
    which a trace would record as a constant; the whole row range stays dynamic.
    """
    if len(counts) == 1:
        return [slice(None)]
    ends = list(itertools.accumulate(counts))
    return [slice(end - n, end) for n, end in zip(counts, ends)]


def descending_order(scores: Tensor) -> Tensor:
    """(N,) int64 indices that sort ``scores`` (N,) descending, ties by the lower index: a
    stable sort, also under tracing.

    ONNX has no stable sort (``torch.sort(stable=True)`` does not export, and an unstable sort
    may order ties differently in TorchScript and in ONNX), so a trace ranks each score by
    counting those that come before it (O(N^2), N the detections of one image) and sorts the
    ranks, which are distinct.
    """
    if not torch.jit.is_tracing():
        return torch.sort(scores, descending=True, stable=True).indices
    idx = torch.arange(scores.shape[0], device=scores.device)
    higher = scores[None, :] > scores[:, None]
    tied_before = (scores[None, :] == scores[:, None]) & (idx[None, :] < idx[:, None])
    return torch.argsort((higher | tied_before).sum(dim=1))


def _top_rows(detections: Detections, k: int) -> Tuple[Tensor, List[int]]:
    """Rows of each image's ``k`` highest-scoring detections (ties: the earlier row), grouped
    by image in image order, and their count per image; known from the counts, no host sync."""
    counts = detections.counts
    dev = detections.scores.device
    order = descending_order(detections.scores)
    if len(counts) == 1:  # a slice, not a size from the count: a trace keeps it dynamic
        return order[:k], [min(counts[0], k)]
    # rows in order of score within each image (images in order): the first k of each
    # image's segment are its top k
    order = order[torch.sort(detections.image_index[order], stable=True).indices]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    top = [min(n, k) for n in counts]
    return order[_per_row(starts, top, dev) + _ranks(top, dev)], top


def _per_row(values, counts: Sequence[int], device: torch.device) -> Tensor:
    """(sum(counts),) int64: ``values[i]`` repeated ``counts[i]`` times.

    Filled on the device from Python ints, unlike ``repeat_interleave`` on a tensor of
    counts: no host-to-device copy and no data-dependent size, hence no host sync.
    """
    return cat(
        [torch.full((n,), v, dtype=torch.long, device=device) for v, n in zip(values, counts)]
    )


def _ranks(counts: Sequence[int], device: torch.device) -> Tensor:
    """(sum(counts),) int64: 0..counts[i]-1 for each i in turn (no host sync)."""
    total = sum(counts)
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return torch.arange(total, device=device) - _per_row(starts, counts, device)
