"""The shapes reference Cascade Mask R-CNN as a LazyConfig: the same model, weights and
thresholds as ``turbo_cascade_mask_rcnn_R18_FPN.yaml`` (the Mask R-CNN config's backbone,
three cascade stages with class-agnostic regression)."""

import os

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import CascadeROIHeads, FastRCNNConvFCHead, FastRCNNOutputLayers

from turbo.lazy import use_turbo

from .turbo_mask_rcnn_R18_FPN import (
    _CHANNELS,
    _REPO,
    lr_multiplier,
    model,
    train,
)

heads = model.roi_heads
for key in ("box_head", "box_predictor", "proposal_matcher"):
    heads.pop(key)
heads.update(
    _target_=CascadeROIHeads,
    box_heads=[
        L(FastRCNNConvFCHead)(
            input_shape=ShapeSpec(channels=_CHANNELS, height=7, width=7),
            conv_dims=[],
            fc_dims=[256, 256],
        )
        for _ in range(3)
    ],
    box_predictors=[
        L(FastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=256),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(w1, w1, w2, w2)),
            cls_agnostic_bbox_reg=True,
            num_classes="${...num_classes}",
        )
        for w1, w2 in ((10, 5), (20, 10), (30, 15))
    ],
    proposal_matchers=[
        L(Matcher)(thresholds=[t], labels=[0, 1], allow_low_quality_matches=False)
        for t in (0.5, 0.6, 0.7)
    ],
)
# Turbo, with the threshold the yacs config tuned on shapes_tune
use_turbo(model, maskness_thresh=0.2)

train.init_checkpoint = os.path.join(_REPO, "checkpoints", "shapes_cascade_mask_rcnn_R18_FPN.pth")
train.output_dir = "./output/lazy_shapes_cascade_mask_rcnn_R18_FPN"
train.max_iter = 1500
lr_multiplier.scheduler.milestones = [1150, 1400]
lr_multiplier.scheduler.num_updates = 1500
lr_multiplier.warmup_length = 200 / 1500
