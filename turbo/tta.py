"""Test-time augmentation with the turbo cycles (Detectron2's ``GeneralizedRCNNWithTTA``)."""

from __future__ import annotations

from typing import List

import torch
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import Tensor

from .heads import TurboMixin
from .ops import finite_probs

__all__ = ["TurboRCNNWithTTA"]


class TurboRCNNWithTTA(GeneralizedRCNNWithTTA):
    """``GeneralizedRCNNWithTTA`` that runs the turbo cycles on the merged detections.

    Detectron2's TTA detects in every augmented image (here with the turbo detection stage,
    Soft-NMS when enabled), merges the boxes in the original image, then averages each
    detection's masks over the augmentations, all predicted in the one merged box. Turbo keeps
    that: each cycle refines the merged boxes from the averaged masks, in the original image,
    and predicts the masks again in every augmentation on the refined boxes, averaged again;
    Maskness rescoring reads the averaged masks. Models whose ROI heads are not turbo heads,
    or with ``num_iters`` 0, get Detectron2's TTA unchanged.

    Each cycle costs one more pass of every augmentation (Detectron2's TTA recomputes the
    backbone whenever it predicts masks).
    """

    def _inference_one_image(self, input):
        heads = self.model.roi_heads
        if (
            not isinstance(heads, TurboMixin)
            or heads.turbo.num_iters == 0
            or not self.cfg.MODEL.MASK_ON
        ):
            return super()._inference_one_image(input)
        orig_shape = (input["height"], input["width"])
        augmented_inputs, tfms = self._get_augmented_inputs(input)
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]), heads.turbo_params(num_iters=0):
            all_boxes, all_scores, all_classes = self._get_augmented_boxes(augmented_inputs, tfms)
        merged = self._merge_detections(all_boxes, all_scores, all_classes, orig_shape)

        def predict(boxes: Tensor, classes: Tensor, counts: List[int]) -> Tensor:
            """Masks averaged over the augmentations, in ``boxes`` (original image)."""
            inst = Instances(
                orig_shape,
                pred_boxes=Boxes(boxes),
                pred_classes=classes,
                scores=torch.zeros_like(boxes[:, 0]),
            )
            aug = self._rescale_detected_boxes(augmented_inputs, inst, tfms)
            return finite_probs(
                self._reduce_pred_masks(self._batch_inference(augmented_inputs, aug), tfms)[:, 0]
            )

        # the heads' own stages (TurboMixin.refine) on the merged detections, each mask
        # prediction averaged over the augmentations: an instance attribute shadows the heads'
        # mask predictor inside the block
        heads.predict_masks = lambda features, boxes, classes, counts, image_sizes: predict(
            boxes, classes, counts
        )
        try:
            (result,) = heads.refine({}, [merged])
        finally:
            del heads.predict_masks
        return {"instances": detector_postprocess(result, *orig_shape)}
