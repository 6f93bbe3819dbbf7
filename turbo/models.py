"""Models from config files (yacs ``.yaml`` or LazyConfig ``.py``), and the shared prefix.

A yacs config gets the ``MODEL.TURBO`` and PointRend keys (:func:`turbo.config.get_turbo_cfg`)
and trailing ``KEY VALUE`` overrides; a LazyConfig gets ``key=value`` overrides. Either way
the model is Detectron2's, its weights loaded by ``DetectionCheckpointer`` (local paths and
``detectron2://`` model-zoo URLs alike).

The shared prefix (preprocessing, backbone, proposals) does not depend on the Turbo
parameters, so variants of one model can run it once per batch (:func:`run_prefix`) and only
their ROI heads each (:func:`run_heads`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import ImageList, Instances
from omegaconf import DictConfig
from torch import Tensor, nn

from .config import get_turbo_cfg
from .heads import TurboMixin

__all__ = [
    "REPO_ROOT",
    "REFERENCE_MODELS",
    "AnyConfig",
    "is_lazy_config",
    "load_config",
    "resolve_device",
    "config_device",
    "build_turbo_model",
    "load_model",
    "turbo_heads_of",
    "set_score_thresh",
    "test_mapper",
    "inference_loader",
    "Prefix",
    "run_prefix",
    "run_heads",
    "postprocess",
]

AnyConfig = Union[CfgNode, DictConfig]
logger = logging.getLogger(__name__)

# The source checkout this package lives in (its configs/ and checkpoints/).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shipped reference models, trained on shapes_train: name -> (label, config, checkpoint),
# paths relative to REPO_ROOT. "heldout" and "heldout_cascade" were tuned on by nothing: they
# show whether the defaults carry over to models they were not chosen on.
REFERENCE_MODELS: Dict[str, Tuple[str, str, str]] = {
    "mask_rcnn": (
        "Mask R-CNN",
        "configs/shapes/turbo_mask_rcnn_R18_FPN.yaml",
        "checkpoints/shapes_mask_rcnn_R18_FPN.pth",
    ),
    "cascade": (
        "Cascade",
        "configs/shapes/turbo_cascade_mask_rcnn_R18_FPN.yaml",
        "checkpoints/shapes_cascade_mask_rcnn_R18_FPN.pth",
    ),
    "heldout": (
        "Held-out",
        "configs/shapes/turbo_mask_rcnn_R18_FPN96.yaml",
        "checkpoints/shapes_mask_rcnn_R18_FPN96.pth",
    ),
    "heldout_cascade": (
        "Held-out cascade",
        "configs/shapes/turbo_cascade_mask_rcnn_R18_FPN48.yaml",
        "checkpoints/shapes_cascade_mask_rcnn_R18_FPN48.pth",
    ),
}


def is_lazy_config(path: str) -> bool:
    """Whether ``path`` is a LazyConfig (``.py``) rather than a yacs (``.yaml``) config."""
    return path.endswith(".py")


def load_config(config_file: str, opts: Sequence[str] = ()) -> AnyConfig:
    """A yacs config (turbo and PointRend keys added, ``opts`` as ``KEY VALUE ...``) or a
    LazyConfig (``opts`` as ``key=value ...``)."""
    if is_lazy_config(config_file):
        cfg = LazyConfig.load(config_file)
        return LazyConfig.apply_overrides(cfg, list(opts))
    cfg = get_turbo_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def resolve_device(device: str) -> str:
    """``device``, or "cpu" (with a warning) where it asks for CUDA and none is available, so
    that one command serves GPU and CPU machines."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("%s asked for, but CUDA is not available here: running on CPU", device)
        return "cpu"
    return device


def config_device(cfg: AnyConfig) -> str:
    """The device a config asks for (``MODEL.DEVICE`` or ``train.device``)."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.DEVICE
    return cfg.train.get("device", "cuda") if "train" in cfg else "cuda"


def build_turbo_model(cfg: AnyConfig, device: Optional[str] = None) -> nn.Module:
    """The model a config describes, on ``device`` (default: the config's, CPU where CUDA is
    missing), with the weights it initialises itself with (none loaded)."""
    device = resolve_device(device or config_device(cfg))
    if isinstance(cfg, CfgNode):
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = device
        return build_model(cfg)
    return instantiate(cfg.model).to(device)


def load_model(
    config_file: str,
    weights: Optional[str] = None,
    device: Optional[str] = None,
    opts: Sequence[str] = (),
) -> Tuple[AnyConfig, nn.Module]:
    """(config, model in eval mode) from a config file and weights (default: the config's
    ``MODEL.WEIGHTS`` or ``train.init_checkpoint``), on ``device`` (default: the config's,
    CPU where CUDA is missing)."""
    cfg = load_config(config_file, opts)
    model = build_turbo_model(cfg, device)
    if not weights:
        weights = cfg.MODEL.WEIGHTS if isinstance(cfg, CfgNode) else cfg.train.init_checkpoint
    DetectionCheckpointer(model).load(weights)
    return cfg, model.eval()


def turbo_heads_of(model: nn.Module) -> TurboMixin:
    """The model's ROI heads, which must be turbo heads."""
    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, TurboMixin):
        raise TypeError(
            f"model.roi_heads is {type(heads).__name__}, not a turbo head: use "
            "TurboROIHeads / TurboCascadeROIHeads (MODEL.ROI_HEADS.NAME) or "
            "turbo.lazy.use_turbo in a LazyConfig"
        )
    return heads


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
