"""The shapes reference Cascade Mask R-CNN as a LazyConfig: the same model, weights and
score map as ``turbo_cascade_mask_rcnn_R18_FPN.yaml`` (the Mask R-CNN config's backbone,
three cascade stages with class-agnostic regression)."""

import os

import yaml
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import FastRCNNConvFCHead

from turbo.lazy import make_cascade, use_turbo

from .turbo_mask_rcnn_R18_FPN import (
    _CHANNELS,
    _REPO,
    dataloader,  # noqa: F401 (the Mask R-CNN config's data, part of this config)
    lr_multiplier,
    model,
    train,
)

make_cascade(
    model.roi_heads,
    L(FastRCNNConvFCHead)(
        input_shape=ShapeSpec(channels=_CHANNELS, height=7, width=7),
        conv_dims=[],
        fc_dims=[256, 256],
    ),
)
# Turbo with the package defaults and the yacs config's score map, fitted for this model
# (projects/turbo/fit_score_map.py)
with open(os.path.join(_REPO, "configs", "shapes", "turbo_cascade_mask_rcnn_R18_FPN.yaml")) as _f:
    _SCORE_MAP = yaml.safe_load(_f)["MODEL"]["TURBO"]["SCORE_MAP"]
use_turbo(model, score_map=_SCORE_MAP)

train.init_checkpoint = os.path.join(_REPO, "checkpoints", "shapes_cascade_mask_rcnn_R18_FPN.pth")
train.output_dir = "./output/lazy_shapes_cascade_mask_rcnn_R18_FPN"
train.max_iter = 1500
lr_multiplier.scheduler.milestones = [1150, 1400]
lr_multiplier.scheduler.num_updates = 1500
lr_multiplier.warmup_length = 200 / 1500
