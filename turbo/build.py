"""Models from config files (yacs ``.yaml`` or LazyConfig ``.py``).

A yacs config gets the ``MODEL.TURBO`` and PointRend keys (:func:`get_turbo_cfg`)
and trailing ``KEY VALUE`` overrides; a LazyConfig gets ``key=value`` overrides. Either way
the model is Detectron2's, its weights loaded by ``DetectionCheckpointer`` (local paths and
``detectron2://`` model-zoo URLs alike).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple, Union

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from omegaconf import DictConfig
from torch import nn

from .config import add_turbo_config
from .heads import TurboMixin

__all__ = [
    "AnyConfig",
    "get_turbo_cfg",
    "is_lazy_config",
    "load_config",
    "resolve_device",
    "config_device",
    "build_turbo_model",
    "load_model",
    "turbo_heads_of",
]

AnyConfig = Union[CfgNode, DictConfig]
logger = logging.getLogger(__name__)


def get_turbo_cfg() -> CfgNode:
    """Detectron2's default config with the ``MODEL.TURBO`` keys and PointRend's keys added
    (so that turbo and PointRend config files both merge into it)."""
    from detectron2.projects.point_rend import add_pointrend_config

    cfg = get_cfg()
    add_turbo_config(cfg)
    add_pointrend_config(cfg)
    return cfg


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
