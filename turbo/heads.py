"""Turbo-Inference ROI heads: inference-time mask feedback for Mask R-CNN and its cascade.

:class:`TurboMixin` gives Turbo inference to any ``StandardROIHeads`` or ``CascadeROIHeads``
subclass; :class:`TurboROIHeads` and :class:`TurboCascadeROIHeads` are the two registered in
``ROI_HEADS_REGISTRY``. They override inference only; training goes through the parent class
untouched. Inference, batched over every detection of every image in the batch, reads
top-down in ``TurboMixin._forward_turbo`` (detection) and :meth:`TurboMixin.refine` (the
rest), which call the stages of :mod:`turbo.inference` in order:

1. detection: the parent's box head, then per-class hard NMS (upstream) or Soft-NMS;
2. vanilla segmentation: the mask head on the detected boxes;
3. ``num_iters`` turbo cycles: mask-to-box refinement of the boxes from their masks, then the
   mask head again on the refined boxes (every box, or each image's ``repredict_topk`` best
   scoring at least ``repredict_min_score``, the others' masks resampled into their refined
   boxes);
4. Maskness rescoring: score <- (1 - w) * score + w * score * maskness, then ``score_map``
   (the recipe's, fitted to give the detector's score scale back; strictly increasing);
5. outputs: detections scoring at or below the box head's ``SCORE_THRESH_TEST`` are left out,
   as upstream leaves them out (Soft-NMS too keeps no decayed score below it).

The mask head is the parent's; Detectron2's ``MaskRCNNConvUpsampleHead`` runs through
:func:`turbo.mask_head.selected_mask_logits` (the same layers in channels-last memory, the
selected class only).

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
import itertools
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

from .config import (
    CASCADE_RECIPE,
    MASK_RCNN_RECIPE,
    Recipe,
    TurboParams,
    is_class_score_map,
    lazy_key,
    yacs_key,
)
from .inference import (
    Detections,
    TurboResult,
    image_slices,
    output_masks,
    refine_boxes,
    repredicted_rows,
    rescored,
    soft_nms_detections,
    updated_masks,
)
from .mask_head import selected_mask_logits, supports_selected_masks
from .ops import finite_probs, knot_table

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

    @property
    def turbo(self) -> TurboParams:
        """The head's resolved Turbo parameters."""
        return self._turbo

    @turbo.setter
    def turbo(self, params: TurboParams) -> None:
        """Set resolved parameters; a score map per class must have one map per class, and
        its knots are held as the buffer ``class_score_knots`` (C, K, 2) (not saved with the
        weights; None for a map shared by all classes), on the head's device."""
        knots = None
        if is_class_score_map(params.score_map):
            if len(params.score_map) != self.num_classes:
                raise ValueError(
                    f"{yacs_key('score_map')} ({lazy_key('score_map')}) holds "
                    f"{len(params.score_map)} per-class maps, but the head has "
                    f"{self.num_classes} classes (MODEL.ROI_HEADS.NUM_CLASSES): give one knot "
                    "list per class, or one knot list for all"
                )
            old = getattr(self, "class_score_knots", None)
            device = old.device if old is not None else _device_of(self)
            knots = knot_table(params.score_map).to(device)
        if "class_score_knots" in self._buffers:
            self.class_score_knots = knots
        else:
            self.register_buffer("class_score_knots", knots, persistent=False)
        self._turbo = params

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
        if turbo.score_map is None and not turbo.recipe_rescoring() and self.turbo.num_iters:
            log_first_n(
                logging.WARNING,
                f"{yacs_key('score_map')} is unset and the rescoring is not the recipe's "
                "(MASKNESS_THRESH, MASKNESS_WEIGHT or MASKNESS_SOURCE set): the scores are not "
                "mapped, so a fixed score threshold keeps fewer detections than without Turbo; "
                "fit a map for this model and its parameters with "
                "projects/turbo/fit_score_map.py",
                n=1,
                name=__name__,
            )

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
        return self._forward_turbo(features, proposals), {}

    def _forward_turbo(
        self, features: Dict[str, Tensor], proposals: List[Instances]
    ) -> List[Instances]:
        """Turbo inference, in the order of the method.

        Args:
            features: the backbone's features by name.
            proposals: per image, the proposal generator's boxes (XYXY, resized input image).

        Returns:
            per image ``Instances`` (:meth:`refine` gives their fields), or with ``num_iters``
            0 the detection stage's boxes with the parent's masks and keypoints.
        """
        p = self.turbo
        # 1. detection: the box head, then Soft-NMS (or the parent's hard NMS)
        instances = self.detect(features, proposals)
        if p.num_iters == 0 or not self.mask_on:
            return self._forward_without_cycles(features, instances)
        return self._forward_keypoint(features, self.refine(features, instances))

    def refine(self, features: Dict[str, Tensor], instances: List[Instances]) -> List[Instances]:
        """Vanilla segmentation, the turbo cycles, Maskness rescoring and the outputs, for the
        detections of ``instances`` (the detection stage's, or any others).

        Args:
            instances: per image, ``pred_boxes`` (XYXY, resized input image), ``scores``,
                ``pred_classes``.

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
        p = self.turbo
        sizes = [x.image_size for x in instances]
        dets = Detections.from_instances(instances)
        # the rows turbo segmentation re-predicts (chosen by the detection scores; the score
        # gate's one host read comes before any mask-head pass is queued)
        rows, row_counts = repredicted_rows(dets, p.repredict_topk, p.repredict_min_score)
        # 2. vanilla segmentation: the mask head in the detected boxes
        first = self.first_masks(features, instances)
        # 3. turbo cycles: turbo detection (the boxes from the masks), then turbo
        # segmentation (the mask head again, in the refined boxes of the re-predicted rows)
        classes = dets.classes if rows is None else dets.classes[rows]
        boxes, masks, found = dets.boxes, first, torch.ones_like(dets.classes, dtype=torch.bool)
        for _ in range(p.num_iters):
            refined, found_now = refine_boxes(p, masks, boxes, dets.image_hw)
            again = refined if rows is None else refined[rows]
            new = self.predict_masks(features, again, classes, row_counts, sizes)
            masks, boxes, found = (
                updated_masks(masks, boxes, refined, rows, new),
                refined,
                found & found_now,
            )
        # 4. Maskness rescoring
        scores, m = rescored(p, dets.scores, first, masks, dets.classes, self.class_score_knots)
        # 5. outputs: above the user's score threshold, sorted by score
        result = TurboResult(
            boxes=boxes, masks=output_masks(p, masks), scores=scores, maskness=m, found=found
        )
        return result.to_instances(
            dets,
            sizes,
            drop_empty=p.empty_mask == "drop",
            score_thresh=self.final_box_predictor().test_score_thresh,
        )

    def _forward_without_cycles(
        self, features: Dict[str, Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """The parent's masks and keypoints on the detection stage's boxes (``num_iters`` 0,
        or the mask head turned off)."""
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
        (class-specific or class-agnostic, PointRend's) works as it does upstream; Detectron2's
        ``MaskRCNNConvUpsampleHead`` under the parent's own ``_forward_mask`` runs its layers
        through :func:`turbo.mask_head.selected_mask_logits` (channels-last, the selected
        class only: upstream's probabilities up to float rounding, at less cost).
        """
        if self._selected_masks_apply():
            x = self.mask_pooler(
                [features[f] for f in self.mask_in_features],
                [Boxes(boxes[sl]) for sl in image_slices(counts)],
            )
            return finite_probs(selected_mask_logits(self.mask_head, x, classes).sigmoid())
        per_image = [
            Instances(size, pred_boxes=Boxes(boxes[sl]), pred_classes=classes[sl])
            for size, sl in zip(image_sizes, image_slices(counts))
        ]
        per_image = self._forward_mask(features, per_image)
        return finite_probs(cat([x.pred_masks for x in per_image])[:, 0])

    def _selected_masks_apply(self) -> bool:
        """Whether the mask head is Detectron2's ``MaskRCNNConvUpsampleHead`` behind the
        parent's own pooling (``StandardROIHeads._forward_mask`` not overridden)."""
        return (
            getattr(self, "mask_pooler", None) is not None
            and type(self)._forward_mask is StandardROIHeads._forward_mask
            and supports_selected_masks(self.mask_head)
        )

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


def _device_of(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU when it has none)."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return torch.device("cpu")


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
