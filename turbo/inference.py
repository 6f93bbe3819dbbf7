"""The stages of Turbo-Inference on detections, independent of any ``nn.Module``.

1. detection: :func:`soft_nms_detections`, the Soft-NMS counterpart of Detectron2's
   ``fast_rcnn_inference``;
2. vanilla segmentation: the mask head on the detected boxes (the caller's);
3. ``num_iters`` turbo cycles, each turbo detection (:func:`refine_boxes`: mask-to-box
   refinement) then turbo segmentation (the caller's mask head on the refined boxes of
   :func:`repredicted_rows`, merged by :func:`updated_masks`);
4. Maskness rescoring (:func:`rescored`);
5. outputs: :func:`output_masks` and :meth:`TurboResult.to_instances`.

``TurboMixin._forward_turbo`` (:mod:`turbo.heads`) calls them in that order.

Rows of every tensor are the detections of one or more images, grouped by image in image
order; boxes are XYXY in the resized input image of their row (``Instances.image_size``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.layers import cat
from detectron2.structures import Boxes, Instances
from torch import Tensor

from .config import IDENTITY_MAP, SoftNMSParams, TurboParams, is_class_score_map
from .ops import (
    batched_soft_nms,
    class_piecewise_linear,
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
    "soft_nms_detections",
    "refine_boxes",
    "repredicted_rows",
    "updated_masks",
    "rescored",
    "output_masks",
    "per_image_instances",
    "image_slices",
    "descending_order",
]


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
        s = s[:, :-1]
        num_reg = b.shape[1] // 4  # 1 (class-agnostic regression) or K
        # rows with a non-finite box or score are dropped in the one host sync that selects
        # the candidates; their boxes are clipped once selected (clipping is per box)
        rows, cls = ((s > score_thresh) & valid[:, None]).nonzero(as_tuple=True)
        cand = Boxes(b.reshape(s.shape[0], num_reg, 4)[rows, cls % num_reg])  # col 0: agnostic
        cand.clip(shape)
        all_boxes.append(cand.tensor)
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


def refine_boxes(
    params: TurboParams, masks: Tensor, boxes: Tensor, image_hw: Tensor
) -> Tuple[Tensor, Tensor]:
    """Turbo detection, one cycle's mask-to-box refinement.

    Args:
        params: resolved parameters (``box_thresh``, ``box_fusion``).
        masks: (N, M, M) finite mask probabilities, each predicted in its row of ``boxes``.
        boxes: (N, 4) XYXY in the resized input image.
        image_hw: (N, 2) int64 height and width of each row's image.

    Returns:
        refined: (N, 4) ``box_fusion * boxes + (1 - box_fusion) * tight box`` of each pasted
            mask (``turbo.ops.mask_boxes``); a row without mask pixels keeps its box.
        found: (N,) bool, the rows whose mask has pixels at or above ``box_thresh``.
    """
    mask_box, found = mask_boxes(masks, boxes, image_hw, params.box_thresh)
    return params.box_fusion * boxes + (1.0 - params.box_fusion) * mask_box, found


def repredicted_rows(
    detections: Detections, k: int, min_score: float = 0.0
) -> Tuple[Optional[Tensor], List[int]]:
    """Turbo segmentation's rows, grouped by image, and their count per image.

    Every row (``None``, and the per-image counts) when ``k`` is 0 and ``min_score`` 0; else
    the rows of each image's ``k`` highest-scoring detections (every detection when ``k`` is
    0; the ``repredict_topk`` rank gate; ties: the earlier row) whose detection score is at
    least ``min_score`` (the ``repredict_min_score`` score gate), in descending order of
    score within each image. The scores are the detection stage's, so the rows are the same
    in every cycle. The rank gate alone makes no host sync; the score gate reads the number
    of rows it keeps (one sync, before any mask-head pass is queued)."""
    if k <= 0 and min_score <= 0:
        return None, list(detections.counts)
    rows, counts = _top_rows(detections, k)
    if min_score <= 0:
        return rows, counts
    passes = detections.scores[rows] >= min_score
    if len(counts) == 1:  # a mask, not a count: a trace keeps the number of rows dynamic
        rows = rows[passes]
        return rows, [rows.shape[0]]
    # each image's rows are in descending order of score: those that pass are a prefix of
    # its segment, so the passing counts (one read) give the rows without a second read
    kept = (
        torch.zeros(len(counts), dtype=torch.long, device=rows.device)
        .index_add_(0, detections.image_index[rows], passes.long())
        .tolist()
    )
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return rows[_per_row(starts, kept, rows.device) + _ranks(kept, rows.device)], kept


def updated_masks(
    masks: Tensor, boxes: Tensor, refined: Tensor, rows: Optional[Tensor], new: Tensor
) -> Tensor:
    """The (N, M, M) masks after one cycle: ``new`` (the mask head's, in ``refined[rows]``) for
    the re-predicted ``rows`` (``None``: every row), and for the others their mask in ``boxes``
    resampled into its refined box (``turbo.ops.resample_masks``), so that every mask lies in
    its output box."""
    if rows is None:
        return new
    resampled = resample_masks(masks, boxes, refined)
    # under autocast the mask head's probabilities may be of a lower precision than resampling's
    return resampled.index_put((rows,), new.to(resampled.dtype))


def rescored(
    params: TurboParams,
    scores: Tensor,
    first_masks: Tensor,
    masks: Tensor,
    classes: Optional[Tensor] = None,
    class_knots: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Maskness rescoring: ``score * ((1 - w) + w * maskness)`` with the recipe's weight w,
    by the first masks' Maskness (``maskness_source`` "first"), or by the first masks' and
    then again by the output masks' ("both"); then ``score_map``, strictly increasing (the
    order, hence AP, unchanged; the identity :data:`turbo.config.IDENTITY_MAP` is skipped),
    or with one map per class each row's class's (``classes`` (N,) and ``class_knots``, the
    maps' :func:`turbo.ops.knot_table` that the heads hold, needed). Scores stay in [0, 1].

    Returns the (N,) scores and the (N,) Maskness reported with each detection: the first
    masks' ("first"), the output masks' ("both")."""
    w = params.maskness_weight
    both = params.maskness_source == "both"
    m = maskness(masks if both else first_masks, params.maskness_thresh)
    scores = scores * ((1.0 - w) + w * m)
    if both:  # the first masks' Maskness rescores once more
        scores = scores * ((1.0 - w) + w * maskness(first_masks, params.maskness_thresh))
    if is_class_score_map(params.score_map):
        if classes is None or class_knots is None:
            raise ValueError("a score map per class needs the classes and the maps' knot table")
        scores = class_piecewise_linear(scores, classes, class_knots)
    elif params.score_map not in (None, IDENTITY_MAP):
        scores = piecewise_linear(scores, params.score_map)
    return scores, m


def output_masks(params: TurboParams, masks: Tensor) -> Tensor:
    """The (N, M, M) output masks: the probabilities (``mask_edge`` "probability"), or with
    "half_interior" each divided by its interior level (``turbo.ops.edge_normalized``), those
    with a cell at or above ``box_thresh``. After rescoring, which reads probabilities."""
    if params.mask_edge == "probability":
        return masks
    return edge_normalized(masks, params.box_thresh)


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
    """Rows of each image's ``k`` highest-scoring detections (every row for ``k`` <= 0; ties:
    the earlier row), grouped by image in image order and in descending order of score
    within each image, and their count per image; known from the counts, no host sync."""
    counts = detections.counts
    dev = detections.scores.device
    order = descending_order(detections.scores)
    if len(counts) == 1:  # a slice, not a size from the count: a trace keeps it dynamic
        return (order[:k] if k > 0 else order), [min(counts[0], k) if k > 0 else counts[0]]
    # rows in order of score within each image (images in order): the first k of each
    # image's segment are its top k
    order = order[torch.sort(detections.image_index[order], stable=True).indices]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    top = [min(n, k) if k > 0 else n for n in counts]
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
