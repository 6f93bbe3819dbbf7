"""One image in, Detectron2 outputs out, from a yacs or a LazyConfig config; and baseline
against Turbo on the same image.

For a yacs config this is Detectron2's ``DefaultPredictor``. Detectron2 has no predictor for
LazyConfig models; :class:`LazyPredictor` does the same from the config's test mapping.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from .build import AnyConfig, build_turbo_model, config_device, resolve_device, turbo_heads_of
from .config import TurboParams

__all__ = [
    "LazyPredictor",
    "model_input",
    "build_predictor",
    "predict_baseline_and_turbo",
    "class_names",
]


class LazyPredictor:
    """``DefaultPredictor`` for a LazyConfig: the model of ``cfg.model`` with
    ``train.init_checkpoint`` (or ``weights``), eval mode, the test mapping of
    ``dataloader.test.mapper`` (its augmentations and image format). Call it with one BGR
    image (H, W, 3) ``uint8``; returns ``{"instances": ...}`` in that image's frame."""

    def __init__(self, cfg, weights: Optional[str] = None, device: Optional[str] = None):
        self.cfg = cfg
        self.model = build_turbo_model(cfg, device).eval()
        DetectionCheckpointer(self.model).load(weights or cfg.train.init_checkpoint)
        mapper = cfg.dataloader.test.mapper
        self.aug = T.AugmentationList([instantiate(a) for a in mapper.augmentations])
        self.input_format = mapper.image_format
        self.metadata = MetadataCatalog.get(cfg.dataloader.test.dataset.names)

    @torch.no_grad()
    def __call__(self, original_image: np.ndarray) -> Dict[str, Instances]:
        height, width = original_image.shape[:2]
        tensor = model_input(self, original_image).float()
        return self.model([{"image": tensor, "height": height, "width": width}])[0]


def model_input(predictor, original_image: np.ndarray) -> torch.Tensor:
    """(3, H, W) uint8 model input of one BGR image (H0, W0, 3) ``uint8``, as ``predictor``
    (``DefaultPredictor`` or :class:`LazyPredictor`) feeds its model: in its input format,
    resized by its test-time augmentation."""
    image = original_image[:, :, ::-1] if predictor.input_format == "RGB" else original_image
    aug_input = T.AugInput(np.ascontiguousarray(image))
    predictor.aug(aug_input)
    return torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))


def build_predictor(cfg: AnyConfig, weights: Optional[str] = None, device: Optional[str] = None):
    """``DefaultPredictor`` (yacs) or :class:`LazyPredictor` for a config, on ``device``
    (default: the config's, CPU where CUDA is missing)."""
    device = resolve_device(device or config_device(cfg))
    if isinstance(cfg, CfgNode):
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = device
        if weights:
            cfg.MODEL.WEIGHTS = weights
        return DefaultPredictor(cfg)
    return LazyPredictor(cfg, weights, device)


def predict_baseline_and_turbo(
    predictor, image: np.ndarray, params: Optional[TurboParams] = None
) -> Tuple[Instances, Instances]:
    """The upstream prediction (no cycle, hard NMS) and the Turbo prediction (the heads' own
    parameters, or ``params``) of one BGR image, as CPU ``Instances``."""
    heads = turbo_heads_of(predictor.model)
    with heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
        base = predictor(image)["instances"].to("cpu")
    with heads.turbo_params(params):
        turbo = predictor(image)["instances"].to("cpu")
    return base, turbo


def class_names(predictor) -> Optional[list]:
    """The predictor's class names (its test dataset's ``thing_classes``), if registered."""
    return predictor.metadata.get("thing_classes", None)
