"""Turbo-Inference ROI heads: inference-time mask feedback for Mask R-CNN and its cascade.

:class:`TurboMixin` gives Turbo inference to any ``StandardROIHeads`` or ``CascadeROIHeads``
subclass; :class:`TurboROIHeads` and :class:`TurboCascadeROIHeads` are the two registered in
``ROI_HEADS_REGISTRY``. They override inference only; training goes through the parent class
untouched. Inference, batched over every detection of every image in the batch
(the stages are :mod:`turbo.inference`):

1. detection: the parent's box head, then per-class hard NMS (upstream) or Soft-NMS;
2. vanilla segmentation: the mask head on the detected boxes;
3. ``num_iters`` turbo cycles: mask-to-box refinement of the boxes from their masks, then the
   mask head again on the refined boxes;
4. Maskness rescoring: score <- (1 - w) * score + w * score * maskness, then the optional
   ``score_map``; detections scoring at or below the box head's ``SCORE_THRESH_TEST`` are
   left out, as upstream leaves them out (Soft-NMS too keeps no decayed score below it).

All boxes are XYXY in the resized input image (``Instances.image_size``), and every output
mask is the one predicted in the output box (or resampled exactly into it), so
``detector_postprocess`` pastes it right. A model without a mask head (``MASK_ON`` False)
uses the Soft-NMS detection stage alone (``num_iters`` unset or 0).

Robustness: images without proposals or detections give empty ``Instances`` (with
``pred_masks`` of shape (0, 1, M, M)); non-finite box-head outputs are dropped by the
detection stage; non-finite mask probabilities and scores are mapped to finite values
(``turbo.ops.finite_probs``), so no NaN leaves the turbo path. The outputs of one image do
not depend on the other images of the batch, up to the rounding of batched convolutions.
Host syncs: the Soft-NMS detection stage makes the host wait for the device (its candidate
selection, category layout and stopping checks: ``docs/results/bench_ops.md`` counts them
per image); a turbo cycle makes none of its own, the only ones left there being inside
Detectron2's ``ROIPooler`` (mask pooling: the box-to-level assignment), which the upstream
mask head pays as well; the output step makes one per image, to read which detections score
above ``SCORE_THRESH_TEST``, as Detectron2's ``fast_rcnn_inference`` does. With autograd
on, the outputs are those of autograd off; refined boxes are whole pixels and carry no
gradient (``turbo.ops.mask_boxes``).

Deployment: a model with these heads traces on one image (``detectron2.export.TracingAdapter``)
and replays any other image as eager inference does, as TorchScript and ONNX
(:mod:`turbo.export`); tracing a batch of several images with Turbo on is refused.

Test-time augmentation: :class:`turbo.tta.TurboRCNNWithTTA` runs the turbo cycles on TTA's
merged detections. Detectron2's plain ``GeneralizedRCNNWithTTA`` turns ``mask_on`` off while
it gathers boxes, so the heads then do detection only (Soft-NMS when enabled) and it predicts
plain masks on the merged boxes: no cycles, with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    Res5ROIHeads,
    StandardROIHeads,
)
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import log_first_n
from torch import Tensor

from .config import CASCADE_RECIPE, MASK_RCNN_RECIPE, Recipe, TurboParams, lazy_key
from .inference import Detections, image_slices, soft_nms_detections, turbo_cycles
from .ops import finite_probs

__all__ = ["TurboMixin", "TurboROIHeads", "TurboCascadeROIHeads", "turbo_heads"]


class TurboMixin:
    """Turbo-Inference for a ``StandardROIHeads`` or ``CascadeROIHeads`` subclass.

    Put it first among the bases; it changes inference only::

        @ROI_HEADS_REGISTRY.register()
        class TurboMyROIHeads(TurboMixin, MyROIHeads):
            pass

    (or ``turbo_heads(MyROIHeads)``). The head takes one more argument, ``turbo``: a
    :class:`~turbo.config.TurboParams` (or a mapping of its fields), read from
    ``MODEL.TURBO`` in a yacs config; recipe keys left unset take the published Mask R-CNN
    recipe, or the cascade recipe for a ``CascadeROIHeads``. The detection stage re-runs the
    parent's box head (``box_pooler``, ``box_head``, ``box_predictor``, or each cascade stage)
    before its own suppression: a subclass that changes how box candidates are computed
    overrides :meth:`box_candidates` too.
    """

    turbo: TurboParams

    @configurable
    def __init__(self, *, turbo: Union[TurboParams, Mapping[str, Any], None] = None, **kwargs):
        """``turbo``: the Turbo parameters (default: all defaults, with this head's recipe);
        the other arguments are the parent head's."""
        super().__init__(**kwargs)
        if turbo is None:
            turbo = TurboParams()
        elif isinstance(turbo, Mapping):
            turbo = TurboParams.from_dict(turbo)
        elif not isinstance(turbo, TurboParams):
            raise ValueError(
                f"{lazy_key('')[:-1]} must be a TurboParams or a mapping of its "
                f"fields, got {type(turbo).__name__}"
            )
        if turbo.num_iters is not None and turbo.num_iters > 0 and not self.mask_on:
            raise ValueError(
                f"{lazy_key('num_iters')} is {turbo.num_iters}, but {type(self).__name__} "
                f"has no mask head: set it to 0 (or leave it unset) for Soft-NMS alone, or give "
                f"the head a mask head"
            )
        self.turbo = turbo.resolved(self.recipe(), self.mask_on)

    @classmethod
    def recipe(cls) -> Recipe:
        """The published recipe that unset recipe keys resolve to."""
        return CASCADE_RECIPE if issubclass(cls, CascadeROIHeads) else MASK_RCNN_RECIPE

    @classmethod
    def from_config(cls, cfg, input_shape):
        turbo = TurboParams.from_cfg(cfg)  # fails, naming the yacs key, before any module is built
        ret = super().from_config(cfg, input_shape)
        ret["turbo"] = turbo
        return ret

    @contextlib.contextmanager
    def turbo_params(
        self, params: Optional[TurboParams] = None, **changes: Any
    ) -> Iterator[TurboParams]:
        """Run with other Turbo parameters inside the block, then restore the head's own.

        ``params`` replaces them (unset recipe keys resolved to this head's recipe);
        ``changes`` (field names; ``soft_nms`` as a mapping of its fields) apply on top::

            with model.roi_heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
                outputs = model(inputs)  # upstream inference
        """
        own = self.turbo
        new = own if params is None else params
        self.turbo = new.replace(**changes).resolved(self.recipe(), self.mask_on)
        try:
            yield self.turbo
        finally:
            self.turbo = own

    def forward(
        self,
        images,
        features: Dict[str, Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        if self.training or not self.turbo.active:
            return super().forward(images, features, proposals, targets)
        if torch.jit.is_tracing() and len(proposals) != 1:
            # With several images the rows are split by per-image counts read from tensors,
            # which a trace records as constants: refuse rather than record a wrong graph.
            raise RuntimeError(
                f"{type(self).__name__} with Turbo on can be traced on one image only, got a "
                f"batch of {len(proposals)}: per-image detection counts would become constants "
                "of the trace and other inputs would be split wrongly. Trace with one image "
                "(as detectron2.export.TracingAdapter does with one input), or with Turbo off "
                "(yacs MODEL.TURBO.NUM_ITERS 0 and MODEL.TURBO.SOFT_NMS.ENABLED False; "
                "LazyConfig model.roi_heads.turbo.num_iters=0 and "
                "model.roi_heads.turbo.soft_nms.enabled=False)"
            )
        return self.segment(features, self.detect(features, proposals)), {}

    def segment(
        self,
        features: Dict[str, Tensor],
        instances: List[Instances],
        first_masks: Optional[Tensor] = None,
    ) -> List[Instances]:
        """Everything after the detection stage: :meth:`refine` (the mask head, the turbo
        cycles, Maskness) and the keypoint head, or with ``num_iters`` 0 the parent's
        ``forward_with_given_boxes``. ``segment(features, detect(features, proposals))`` is
        the heads' inference, the parent's exactly when Turbo is off; ``instances`` may be
        added fields to.

        ``first_masks``: :meth:`first_masks` of ``instances`` when already computed (several
        parameter sets on the same detections share them); with ``num_iters`` 0 they are the
        output masks as the parent's mask head gives them."""
        if self.mask_on and first_masks is not None and self.turbo.num_iters == 0:
            for x, m in zip(instances, first_masks[:, None].split([len(x) for x in instances])):
                x.pred_masks = m
            return self._forward_keypoint(features, instances)
        if self.turbo.num_iters > 0 and self.mask_on:
            return self._forward_keypoint(features, self.refine(features, instances, first_masks))
        if self.turbo.num_iters > 0:
            # Detectron2's test-time augmentation turns the mask head off while it gathers
            # boxes; it then calls ``forward_with_given_boxes`` on the merged boxes.
            log_first_n(
                logging.WARNING,
                "Turbo num_iters > 0, but the mask head is off "
                "(test-time augmentation gathering boxes): turbo cycles and Maskness "
                "rescoring are not applied under TTA; use turbo.tta.TurboRCNNWithTTA "
                "for TTA with them",
                n=1,
                name=__name__,
            )
        return self.forward_with_given_boxes(features, instances)

    def detect(self, features: Dict[str, Tensor], proposals: List[Instances]) -> List[Instances]:
        """The detection stage: the parent's own (hard NMS) or Soft-NMS over the same
        candidates. Per image ``Instances`` with ``pred_boxes`` (XYXY, resized input image),
        ``scores``, ``pred_classes``, sorted by score."""
        if not self.turbo.soft_nms.enabled:
            return self._forward_box(features, proposals)
        boxes, scores = self.box_candidates(features, proposals)
        predictor = self.final_box_predictor()
        return soft_nms_detections(
            boxes,
            scores,
            [p.image_size for p in proposals],
            predictor.test_score_thresh,
            predictor.test_topk_per_image,
            self.turbo.soft_nms,
        )

    def final_box_predictor(self):
        """The box predictor whose score threshold and detections per image the outputs
        keep: the last stage's for a cascade."""
        return self.box_predictor[-1] if isinstance(self, CascadeROIHeads) else self.box_predictor

    def box_candidates(
        self, features: Dict[str, Tensor], proposals: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Per image (Ri, K*4) or (Ri, 4) boxes and (Ri, K+1) class scores of the box head,
        before suppression: what the parent's ``_forward_box`` hands to its hard NMS.

        For a cascade, the last stage's boxes and the class scores averaged over stages, as
        ``CascadeROIHeads._forward_box`` computes them; it ends in a hard-coded
        ``fast_rcnn_inference`` and so offers no hook for another suppression.
        """
        box_features = [features[f] for f in self.box_in_features]
        if not isinstance(self, CascadeROIHeads):
            x = self.box_pooler(box_features, [p.proposal_boxes for p in proposals])
            predictions = self.box_predictor(self.box_head(x))
            return (
                self.box_predictor.predict_boxes(predictions, proposals),
                self.box_predictor.predict_probs(predictions, proposals),
            )
        image_sizes = [p.image_size for p in proposals]
        score_sum: Optional[List[Tensor]] = None
        boxes: List[Tensor] = []
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            predictions = self._run_stage(box_features, proposals, k)
            boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            probs = self.box_predictor[k].predict_probs(predictions, proposals)
            score_sum = (
                list(probs) if score_sum is None else [a + b for a, b in zip(score_sum, probs)]
            )
        return boxes, [s * (1.0 / self.num_cascade_stages) for s in score_sum]

    def predict_masks(
        self,
        features: Dict[str, Tensor],
        boxes: Tensor,
        classes: Tensor,
        counts: List[int],
        image_sizes: List[Tuple[int, int]],
    ) -> Tensor:
        """The mask head on ``boxes`` (N, 4) XYXY (resized input image), rows grouped by image
        with ``counts``: (N, M, M) probabilities of each row's class, made finite.

        Goes through the parent's ``_forward_mask``, so any Detectron2 mask head and pooler
        (class-specific or class-agnostic, PointRend's) works as it does upstream.
        """
        per_image = [
            Instances(size, pred_boxes=Boxes(boxes[sl]), pred_classes=classes[sl])
            for size, sl in zip(image_sizes, image_slices(counts))
        ]
        per_image = self._forward_mask(features, per_image)
        return finite_probs(cat([x.pred_masks for x in per_image])[:, 0])

    def first_masks(self, features: Dict[str, Tensor], instances: List[Instances]) -> Tensor:
        """Vanilla segmentation: (N, M, M) finite mask probabilities of the N detections of
        ``instances`` (rows in image order), predicted in their ``pred_boxes``."""
        return self.predict_masks(
            features,
            cat([x.pred_boxes.tensor for x in instances]),
            cat([x.pred_classes for x in instances]),
            [len(x) for x in instances],
            [x.image_size for x in instances],
        )

    def refine(
        self,
        features: Dict[str, Tensor],
        instances: List[Instances],
        first_masks: Optional[Tensor] = None,
    ) -> List[Instances]:
        """Vanilla segmentation, the turbo cycles and Maskness rescoring of detections.

        Args:
            instances: per image, ``pred_boxes`` (XYXY, resized input image), ``scores``,
                ``pred_classes`` from the detection stage.
            first_masks: their :meth:`first_masks`, when already computed.

        Returns:
            per image ``Instances`` with ``pred_boxes`` (refined), ``scores`` (rescored, then
            mapped by ``score_map``), ``pred_classes``, ``pred_masks`` (Ni, 1, M, M) predicted
            in ``pred_boxes`` and ``maskness`` (Ni,), sorted by score, descending (ties keep
            the input order). Only detections scoring above the box predictor's
            ``test_score_thresh`` (``SCORE_THRESH_TEST``) are returned, as upstream.

        No NaN reaches the output: mask probabilities and input scores that are NaN or -inf
        count as 0 and +inf as 1. Input boxes must be finite (the detection stage guarantees
        it); degenerate ones are accepted: a box of zero width or height, inverted, or with
        no pixel of the image inside finds no mask pixel, so it keeps its box (``empty_mask``
        "keep") or is dropped ("drop"); for a box partly outside the image only the mask
        pixels inside the image count. Boxes are not clipped here: the detection stage clips
        them, and a refined box lies within the image wherever its input box does.
        """
        sizes = [x.image_size for x in instances]
        dets = Detections.from_instances(instances)
        predict = functools.partial(self.predict_masks, features, image_sizes=sizes)
        if first_masks is None:
            first_masks = self.first_masks(features, instances)
        out = turbo_cycles(self.turbo, dets, first_masks, predict)
        return out.to_instances(
            dets,
            sizes,
            drop_empty=self.turbo.empty_mask == "drop",
            score_thresh=self.final_box_predictor().test_score_thresh,
        )


@ROI_HEADS_REGISTRY.register()
class TurboROIHeads(TurboMixin, StandardROIHeads):
    """``StandardROIHeads`` with Turbo-Inference (``MODEL.TURBO``); training is the parent's.
    Unset recipe keys take :data:`turbo.config.MASK_RCNN_RECIPE`."""


@ROI_HEADS_REGISTRY.register()
class TurboCascadeROIHeads(TurboMixin, CascadeROIHeads):
    """``CascadeROIHeads`` with Turbo-Inference (``MODEL.TURBO``); training is the parent's.
    Unset recipe keys take :data:`turbo.config.CASCADE_RECIPE`."""


@functools.cache
def turbo_heads(cls: type) -> type:
    """The Turbo version of ROI-heads class ``cls``, a ``StandardROIHeads`` or
    ``CascadeROIHeads`` subclass: ``cls`` itself if it is one already, the registered heads
    for Detectron2's two, else a new class ``"Turbo" + cls.__name__`` with
    :class:`TurboMixin` first (register it in ``ROI_HEADS_REGISTRY`` to use it from yacs)."""
    if isinstance(cls, type) and issubclass(cls, Res5ROIHeads):
        raise TypeError(
            f"turbo_heads does not support {cls.__name__} (the C4 models' Res5ROIHeads): its "
            "mask head runs on res5 features pooled from each box (its shared res5 transform), "
            "so every re-predicted mask would cost a res5 pass; use an FPN model "
            "(StandardROIHeads or CascadeROIHeads)"
        )
    if not (isinstance(cls, type) and issubclass(cls, (StandardROIHeads, CascadeROIHeads))):
        raise TypeError(
            f"turbo_heads needs a StandardROIHeads or CascadeROIHeads subclass, got {cls!r}"
        )
    if issubclass(cls, TurboMixin):
        return cls
    known = {StandardROIHeads: TurboROIHeads, CascadeROIHeads: TurboCascadeROIHeads}
    if cls in known:
        return known[cls]
    return type(
        "Turbo" + cls.__name__,
        (TurboMixin, cls),
        {"__module__": cls.__module__, "__doc__": f"{cls.__name__} with Turbo-Inference."},
    )
