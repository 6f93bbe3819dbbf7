"""Turbo-Inference ROI heads: inference-time mask feedback for Mask R-CNN and its cascade.

Both heads override inference only; training goes through the parent class untouched.
Inference, batched over every detection of every image in the batch:

1. detection: the parent's box head, then per-class hard NMS (upstream) or Soft-NMS;
2. vanilla segmentation: the mask head on the detected boxes;
3. ``NUM_ITERS`` turbo cycles: mask-to-box refinement of every box from its mask, then the
   mask head again on the refined boxes (only for boxes that moved enough);
4. Maskness rescoring: score <- (1 - w) * score + w * score * maskness.

All boxes are XYXY in the resized input image (``Instances.image_size``), and every output
mask is the one predicted in the output box, so ``detector_postprocess`` pastes it right.

Robustness: images without proposals or detections give empty ``Instances`` (with
``pred_masks`` of shape (0, 1, M, M)); non-finite box-head outputs are dropped by the
detection stage; non-finite mask probabilities and scores are mapped to finite values (see
:meth:`_TurboInference._turbo_masks`), so no NaN leaves the turbo path. The outputs of one
image do not depend on the other images of the batch, up to the rounding of batched
convolutions. On the default path (``REPREDICT_IOU`` 1.0) the turbo code itself never makes
the host wait for the device: no data-dependent shapes, nothing copied from the host; the
only host syncs left in a cycle are inside Detectron2's ``ROIPooler`` (mask pooling: the
box-to-level assignment), which the upstream mask head pays as well.

Test-time augmentation: :class:`turbo.tta.TurboRCNNWithTTA` (what ``train_net.py`` uses for
``TEST.AUG``) runs the turbo cycles on TTA's merged detections, with masks averaged over the
augmentations in each refined box. Detectron2's plain ``GeneralizedRCNNWithTTA`` turns
``mask_on`` off while it gathers boxes, so the heads then do detection only (Soft-NMS when
enabled) and it predicts plain masks on the merged boxes: no cycles, with a warning.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    StandardROIHeads,
)
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils.logger import log_first_n

from .config import TurboParams
from .ops import batched_soft_nms, mask_boxes, maskness, resample_masks

__all__ = [
    "TurboROIHeads",
    "TurboCascadeROIHeads",
    "soft_nms_detections",
    "turbo_cycles",
    "MASK_RCNN_RECIPE",
    "CASCADE_RECIPE",
]

# Published recipes (TURBO.md section 2): the values MODEL.TURBO keys left at -1 resolve to.
MASK_RCNN_RECIPE = {
    "box_thresh": 0.20,
    "maskness_thresh": 0.35,
    "maskness_weight": 0.35,
    "box_fusion": 0.0,
}
CASCADE_RECIPE = {
    "box_thresh": 0.23,
    "maskness_thresh": 0.5,
    "maskness_weight": 1.0,
    "box_fusion": 0.5,
}


def soft_nms_detections(
    boxes: List[Tensor],
    scores: List[Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    topk_per_image: int,
    params: TurboParams,
) -> List[Instances]:
    """Soft-NMS counterpart of Detectron2's ``fast_rcnn_inference``, batched over images.

    Args:
        boxes: per image (Ri, K * 4) or (Ri, 4) box-head boxes, XYXY in the resized input image.
        scores: per image (Ri, K + 1) class probabilities, background last.
        image_shapes: per image (h, w) of the resized input image.
        score_thresh: candidates at or below this score are discarded before suppression.
        topk_per_image: detections kept per image (< 0 keeps all).
        params: the Soft-NMS settings.

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
        b = b.tensor.view(len(s), num_reg, 4)
        cand = s > score_thresh  # R x K
        rows, cls = cand.nonzero(as_tuple=True)
        all_boxes.append(b[rows, cls if num_reg > 1 else 0])
        all_scores.append(s[rows, cls])
        all_classes.append(cls)
        all_images.append(torch.full_like(cls, i))
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    b, s, c, im = (cat(x) if x else torch.zeros(0, device=device)
                   for x in (all_boxes, all_scores, all_classes, all_images))
    keep, kept_scores = batched_soft_nms(
        b, s, im * num_classes + c,
        method=params.soft_nms_method,
        iou_threshold=params.soft_nms_iou_thresh,
        sigma=params.soft_nms_sigma,
        min_score=params.soft_nms_min_score,
        topk=topk_per_image, topk_by=im,
    )
    # ``keep`` is sorted by score over the whole batch, at most ``topk_per_image`` per image;
    # a stable sort by image keeps that order inside each image.
    im_kept = im[keep]
    by_image = torch.sort(im_kept, stable=True).indices
    keep, kept_scores = keep[by_image], kept_scores[by_image]
    counts = torch.bincount(im_kept, minlength=len(image_shapes))
    results = []
    sizes = counts.tolist()  # one host sync for the per-image split
    for shape, k, sc in zip(image_shapes, keep.split(sizes), kept_scores.split(sizes)):
        r = Instances(shape)
        r.pred_boxes = Boxes(b[k])
        r.scores = sc
        r.pred_classes = c[k]
        results.append(r)
    return results


def _per_row(values, counts: List[int], device: torch.device) -> Tensor:
    """(sum(counts),) int64: ``values[i]`` repeated ``counts[i]`` times.

    Filled on the device from Python ints, unlike ``repeat_interleave`` on a tensor of
    counts: no host-to-device copy and no data-dependent size, hence no host sync.
    """
    return cat([torch.full((n,), v, dtype=torch.long, device=device)
                for v, n in zip(values, counts)])


MaskPredictor = Callable[[Tensor, Tensor, List[int]], Tensor]


def turbo_cycles(
    p: TurboParams,
    boxes: Tensor,
    classes: Tensor,
    scores: Tensor,
    probs: Tensor,
    image_hw: Tensor,
    image_index: Tensor,
    counts: List[int],
    predict: MaskPredictor,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The turbo cycles and Maskness rescoring on N detections of one or more images.

    Args:
        p: the parameters.
        boxes: (N, 4) XYXY boxes, in the frame of ``image_hw``; classes: (N,); scores: (N,).
        probs: (N, M, M) finite mask probabilities predicted in ``boxes``.
        image_hw: (N, 2) height and width of each row's image; image_index: (N,) its image;
            counts: detections per image (rows are grouped by image).
        predict: ``predict(boxes, classes, counts)`` -> (n, M, M) finite probabilities of the
            mask head on the given rows (grouped by image with ``counts``).

    Returns:
        boxes (N, 4), probs (N, M, M) predicted (or resampled) in those boxes, rescored
        scores (N,), maskness (N,), found (N,) bool: whether every cycle found mask pixels.
    """
    first_probs = probs
    found_all = torch.ones_like(scores, dtype=torch.bool)
    for _ in range(p.num_iters):
        mask_box, found = mask_boxes(probs, boxes, image_hw, p.box_thresh)
        found_all &= found
        refined = p.box_fusion * boxes + (1.0 - p.box_fusion) * mask_box
        if not p.adaptive:
            # Every mask is re-predicted: no data-dependent shapes, no host sync.
            # Rows whose box did not move get the same mask back.
            boxes = refined
            probs = predict(boxes, classes, counts)
            continue
        moved = scores >= p.repredict_min_score
        if p.repredict_iou < 1.0:
            # 0 / 0 (degenerate boxes) -> IoU 0: such rows count as moved
            iou = torch.nan_to_num(matched_pairwise_iou(Boxes(boxes), Boxes(refined)), nan=0.0)
            moved &= iou < p.repredict_iou
        # Adaptive re-prediction selects rows by value: the host reads the device each cycle.
        moved_counts = torch.bincount(image_index[moved], minlength=len(counts)).tolist()
        if p.resample_masks:
            # the others take their refined box too, their mask resampled into it
            probs = resample_masks(probs, boxes, refined)
            boxes = refined
        else:
            boxes = torch.where(moved[:, None], refined, boxes)
        if sum(moved_counts) == 0:
            break  # nothing moves enough: further cycles would change nothing
        new_probs = predict(boxes[moved], classes[moved], moved_counts)
        probs = probs.index_put((moved.nonzero(as_tuple=True)[0],), new_probs)

    m = maskness(first_probs if p.maskness_source == "first" else probs, p.maskness_thresh)
    scores = scores * ((1.0 - p.maskness_weight) + p.maskness_weight * m)
    return boxes, probs, scores, m, found_all


class _TurboInference:
    """Inference of the turbo heads, shared by the Mask R-CNN and the cascade head.

    A host class provides ``RECIPE`` (the values of ``MODEL.TURBO`` keys left at -1),
    ``_box_candidates`` (the box head's per-image boxes and class scores before suppression)
    and ``_final_box_predictor``.
    """

    RECIPE: Mapping[str, float]

    @configurable
    def __init__(self, *, turbo: Optional[TurboParams] = None, **kwargs):
        """``turbo``: the Turbo parameters (default: the class's published recipe); the other
        arguments are the parent head's."""
        super().__init__(**kwargs)
        if not self.mask_on:
            raise ValueError(f"{type(self).__name__} needs a mask head: set MODEL.MASK_ON True")
        self.turbo = turbo if turbo is not None else TurboParams(**self.RECIPE)

    @classmethod
    def from_config(cls, cfg, input_shape):
        turbo = TurboParams.from_cfg(cfg, cls.RECIPE)  # fails before any module is built
        ret = super().from_config(cfg, input_shape)
        ret["turbo"] = turbo
        return ret

    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        if self.training or not self.turbo.active:
            return super().forward(images, features, proposals, targets)
        instances = self._detect(features, proposals)
        if not self.mask_on:
            # Detectron2's test-time augmentation turns the mask head off while it gathers
            # boxes; it then calls ``forward_with_given_boxes`` on the merged boxes.
            if self.turbo.num_iters > 0:
                log_first_n(logging.WARNING, "MODEL.TURBO.NUM_ITERS > 0, but the mask head is "
                            "off (test-time augmentation gathering boxes): turbo cycles and "
                            "Maskness rescoring are not applied under TTA; use "
                            "turbo.tta.TurboRCNNWithTTA for TTA with them", n=1)
            return self._forward_keypoint(features, instances), {}
        if self.turbo.num_iters == 0:
            return self.forward_with_given_boxes(features, instances), {}
        instances = self._turbo_masks(features, instances)
        return self._forward_keypoint(features, instances), {}

    def _detect(self, features: Dict[str, Tensor], proposals: List[Instances]) -> List[Instances]:
        """Detection stage: the parent's own (hard NMS) or Soft-NMS over the same candidates."""
        if not self.turbo.soft_nms:
            return self._forward_box(features, proposals)
        boxes, scores = self._box_candidates(features, proposals)
        predictor = self._final_box_predictor
        return soft_nms_detections(
            boxes,
            scores,
            [p.image_size for p in proposals],
            predictor.test_score_thresh,
            predictor.test_topk_per_image,
            self.turbo,
        )

    def _mask_probs(
        self, features: Dict[str, Tensor], boxes: Tensor, classes: Tensor, counts: List[int],
        image_sizes: List[Tuple[int, int]],
    ) -> Tensor:
        """Mask head on ``boxes`` (N, 4) XYXY, rows grouped by image with ``counts``.

        Returns (N, M, M) probabilities of each row's class, made finite (NaN and -inf -> 0,
        +inf -> 1).
        Goes through the parent's ``_forward_mask`` so any Detectron2 mask head and pooler
        (class-specific or class-agnostic) works as it does upstream.
        """
        per_image = []
        for size, b, c in zip(image_sizes, boxes.split(counts), classes.split(counts)):
            x = Instances(size)
            x.pred_boxes = Boxes(b)
            x.pred_classes = c
            per_image.append(x)
        per_image = self._forward_mask(features, per_image)
        probs = cat([x.pred_masks for x in per_image])[:, 0]
        return torch.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0)

    def _turbo_masks(
        self, features: Dict[str, Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Vanilla segmentation, ``NUM_ITERS`` turbo cycles and Maskness rescoring.

        Args:
            instances: per image, ``pred_boxes`` (XYXY, resized input image), ``scores``,
                ``pred_classes`` from the detection stage.

        Returns:
            per image ``Instances`` with ``pred_boxes`` (refined), ``scores`` (rescored),
            ``pred_classes``, ``pred_masks`` (Ni, 1, M, M) predicted in ``pred_boxes`` and
            ``maskness`` (Ni,), sorted by score, descending (ties keep the input order).

        No NaN reaches the output: mask probabilities and input scores that are NaN or -inf
        count as 0 and +inf as 1, so every output score, mask and Maskness is finite (a NaN
        mask is an empty mask: Maskness 0, box kept). Input boxes must be finite (the
        detection stage guarantees it); degenerate ones are accepted: a box of zero width or
        height, inverted, or with no pixel of the image inside (wholly outside it) finds no
        mask pixel, so it keeps its box (``EMPTY_MASK`` "keep") or is dropped ("drop"); for a
        box partly outside the image only the mask pixels inside the image count. Boxes are
        not clipped here: the detection stage clips them, and a refined box lies within the
        image wherever its input box does.

        Host syncs: none with ``REPREDICT_IOU`` 1.0 and ``EMPTY_MASK`` "keep", apart from
        those inside Detectron2's mask pooler; the adaptive path selects rows by value (one
        sync point per cycle) and "drop" selects rows once at the end.
        """
        p = self.turbo
        sizes = [x.image_size for x in instances]
        counts = [len(x) for x in instances]
        boxes = cat([x.pred_boxes.tensor for x in instances])
        classes = cat([x.pred_classes for x in instances])
        scores = torch.nan_to_num(cat([x.scores for x in instances]), nan=0.0, posinf=1.0,
                                  neginf=0.0)
        image_index = _per_row(range(len(counts)), counts, boxes.device)
        image_hw = torch.stack([_per_row([h for h, _ in sizes], counts, boxes.device),
                                _per_row([w for _, w in sizes], counts, boxes.device)], dim=1)

        probs = self._mask_probs(features, boxes, classes, counts, sizes)
        boxes, probs, scores, m, found_all = turbo_cycles(
            p, boxes, classes, scores, probs, image_hw, image_index, counts,
            lambda b, c, n: self._mask_probs(features, b, c, n, sizes))

        keep = None if p.empty_mask == "keep" else found_all
        results = []
        start = 0
        for size, n in zip(sizes, counts):
            sl = slice(start, start + n)
            start += n
            r = Instances(size)
            r.pred_boxes = Boxes(boxes[sl])
            r.scores = scores[sl]
            r.pred_classes = classes[sl]
            r.pred_masks = probs[sl, None]
            r.maskness = m[sl]
            if keep is not None:
                r = r[keep[sl]]
            order = torch.sort(r.scores, descending=True, stable=True).indices
            results.append(r[order])
        return results


@ROI_HEADS_REGISTRY.register()
class TurboROIHeads(_TurboInference, StandardROIHeads):
    """``StandardROIHeads`` with Turbo-Inference (``MODEL.TURBO``); training is the parent's.

    Keys of ``MODEL.TURBO`` left at -1 take the published Mask R-CNN recipe
    (:data:`MASK_RCNN_RECIPE`).
    """

    RECIPE: Mapping[str, float] = MASK_RCNN_RECIPE

    @property
    def _final_box_predictor(self):
        return self.box_predictor

    def _box_candidates(
        self, features: Dict[str, Tensor], proposals: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Per image (Ri, K*4) boxes and (Ri, K+1) scores of the box head, before suppression."""
        x = self.box_pooler([features[f] for f in self.box_in_features],
                            [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(self.box_head(x))
        return (self.box_predictor.predict_boxes(predictions, proposals),
                self.box_predictor.predict_probs(predictions, proposals))


@ROI_HEADS_REGISTRY.register()
class TurboCascadeROIHeads(_TurboInference, CascadeROIHeads):
    """``CascadeROIHeads`` with Turbo-Inference (``MODEL.TURBO``); training is the parent's.

    Keys of ``MODEL.TURBO`` left at -1 take the published cascade recipe
    (:data:`CASCADE_RECIPE`).
    """

    RECIPE: Mapping[str, float] = CASCADE_RECIPE

    @property
    def _final_box_predictor(self):
        return self.box_predictor[-1]

    def _box_candidates(
        self, features: Dict[str, Tensor], proposals: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Last stage's boxes and class scores averaged over stages, before suppression.

        Mirrors the inference half of ``CascadeROIHeads._forward_box``, which ends in a
        hard-coded ``fast_rcnn_inference`` and so offers no hook for another suppression.
        """
        features = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        score_sum: Optional[List[Tensor]] = None
        boxes: List[Tensor] = []
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            predictions = self._run_stage(features, proposals, k)
            boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            probs = self.box_predictor[k].predict_probs(predictions, proposals)
            score_sum = list(probs) if score_sum is None else [
                a + b for a, b in zip(score_sum, probs)]
        scores = [s * (1.0 / self.num_cascade_stages) for s in score_sum]
        return boxes, scores
