"""Running models in a benchmark: the score threshold, the test loader, the shared prefix
(preprocessing, backbone, proposals) and the ROI heads on it, Detectron2's postprocessing.

The shared prefix does not depend on the Turbo parameters, so variants of one model can run
it once per batch (:func:`run_prefix`) and only their ROI heads each (:func:`run_heads`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import ImageList, Instances
from torch import Tensor, nn

from ..build import AnyConfig

__all__ = [
    "set_score_thresh",
    "test_mapper",
    "inference_loader",
    "Prefix",
    "run_prefix",
    "run_heads",
    "postprocess",
]


def set_score_thresh(model: nn.Module, score_thresh: float) -> None:
    """Set the box head's test score threshold (every stage of a cascade), in place."""
    heads = model.roi_heads
    predictors = (
        heads.box_predictor if isinstance(heads, CascadeROIHeads) else [heads.box_predictor]
    )
    for p in predictors:
        p.test_score_thresh = score_thresh


def test_mapper(cfg: AnyConfig):
    """The dataset mapper of the config's test loader."""
    if isinstance(cfg, CfgNode):
        return DatasetMapper(cfg, is_train=False)
    return instantiate(cfg.dataloader.test.mapper)


def inference_loader(cfg: AnyConfig, dataset_dicts: List[dict], batch_size: int = 1):
    """A test loader over ``dataset_dicts`` with the config's test mapping (resize, format)."""
    return build_detection_test_loader(
        dataset_dicts, mapper=test_mapper(cfg), num_workers=0, batch_size=batch_size
    )


@dataclass
class Prefix:
    """What a ``GeneralizedRCNN`` computes before its ROI heads for one batch."""

    images: ImageList  # the preprocessed, padded batch (``image_sizes``: resized input sizes)
    features: Dict[str, Tensor]  # backbone features
    proposals: List[Instances]  # per image proposals, XYXY in the resized input image


@torch.no_grad()
def run_prefix(model: GeneralizedRCNN, batch: List[dict]) -> Prefix:
    """Preprocessing, backbone and proposal generator on ``batch`` (Detectron2 inputs)."""
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    return Prefix(images, features, proposals)


@torch.no_grad()
def run_heads(model: GeneralizedRCNN, prefix: Prefix, batch: Optional[List[dict]] = None) -> List:
    """The ROI heads on a prefix: per image ``Instances`` in the resized input image, or, with
    ``batch``, Detectron2's postprocessed outputs (``[{"instances": ...}]``, original image)."""
    results, _ = model.roi_heads(prefix.images, prefix.features, prefix.proposals, None)
    return results if batch is None else postprocess(results, batch, prefix.images.image_sizes)


def postprocess(
    results: List[Instances], batch: List[dict], image_sizes: List[Tuple[int, int]]
) -> List[dict]:
    """Per image ``Instances`` in the resized input image (``image_sizes``) to Detectron2's
    outputs in the original image, ``[{"instances": ...}]``: what ``GeneralizedRCNN.inference``
    does after its ROI heads (its helper is private)."""
    return [
        {"instances": detector_postprocess(r, x.get("height", size[0]), x.get("width", size[1]))}
        for r, x, size in zip(results, batch, image_sizes)
    ]
