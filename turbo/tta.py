"""Test-time augmentation with the turbo cycles (Detectron2's ``GeneralizedRCNNWithTTA``)."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
from torch import Tensor

from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from .heads import _TurboInference, turbo_cycles

__all__ = ["TurboRCNNWithTTA"]


class TurboRCNNWithTTA(GeneralizedRCNNWithTTA):
    """``GeneralizedRCNNWithTTA`` that runs the turbo cycles on the merged detections.

    Detectron2's TTA detects in every augmented image (here with the turbo detection stage,
    Soft-NMS when enabled), merges the boxes in the original image, then averages each
    detection's masks over the augmentations, all predicted in the one merged box. Turbo keeps
    that: each cycle refines the merged boxes from the averaged masks, in the original image,
    and predicts the masks again in every augmentation on the refined boxes, averaged again;
    Maskness rescoring reads the averaged masks. Models whose ROI heads are not turbo heads,
    or with ``NUM_ITERS`` 0, get Detectron2's TTA unchanged.

    Each cycle costs one more pass of every augmentation (Detectron2's TTA recomputes the
    backbone whenever it predicts masks).
    """

    def _inference_one_image(self, input):
        heads = self.model.roi_heads
        if (not isinstance(heads, _TurboInference) or heads.turbo.num_iters == 0
                or not self.cfg.MODEL.MASK_ON):
            return super()._inference_one_image(input)
        p = heads.turbo
        orig_shape = (input["height"], input["width"])
        augmented_inputs, tfms = self._get_augmented_inputs(input)
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]), _no_cycles(heads):
            all_boxes, all_scores, all_classes = self._get_augmented_boxes(augmented_inputs, tfms)
        merged = self._merge_detections(all_boxes, all_scores, all_classes, orig_shape)

        def predict(boxes: Tensor, classes: Tensor, counts) -> Tensor:
            """Masks averaged over the augmentations, in ``boxes`` (original image)."""
            inst = Instances(orig_shape, pred_boxes=Boxes(boxes), pred_classes=classes,
                             scores=torch.zeros_like(boxes[:, 0]))
            aug = self._rescale_detected_boxes(augmented_inputs, inst, tfms)
            probs = self._reduce_pred_masks(self._batch_inference(augmented_inputs, aug), tfms)
            return torch.nan_to_num(probs[:, 0], nan=0.0, posinf=1.0, neginf=0.0)

        boxes, classes = merged.pred_boxes.tensor, merged.pred_classes
        n = len(merged)
        probs = predict(boxes, classes, [n])
        image_hw = boxes.new_tensor(orig_shape, dtype=torch.long).expand(n, 2)
        boxes, probs, scores, m, found = turbo_cycles(
            p, boxes, classes, torch.nan_to_num(merged.scores, nan=0.0, posinf=1.0, neginf=0.0),
            probs, image_hw, torch.zeros_like(classes), [n], predict)
        out = Instances(orig_shape, pred_boxes=Boxes(boxes), scores=scores,
                        pred_classes=classes, pred_masks=probs[:, None], maskness=m)
        if p.empty_mask == "drop":
            out = out[found]
        out = out[torch.sort(out.scores, descending=True, stable=True).indices]
        return {"instances": detector_postprocess(out, *orig_shape)}


@contextmanager
def _no_cycles(heads: _TurboInference):
    """Run the heads without cycles (while TTA only gathers boxes)."""
    params = heads.turbo
    heads.turbo = dataclasses.replace(params, num_iters=0)
    try:
        yield
    finally:
        heads.turbo = params
