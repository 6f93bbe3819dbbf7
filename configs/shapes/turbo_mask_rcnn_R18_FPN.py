"""The shapes reference Mask R-CNN as a LazyConfig: the same model, weights and score map as
``turbo_mask_rcnn_R18_FPN.yaml`` (ResNet-18 res2-res4, FPN 64 channels with p5 pooled from p4,
6 classes), built from Detectron2's ``common/models/mask_rcnn_fpn.py``::

    python projects/turbo/lazyconfig_train_net.py --eval-only \
        --config-file configs/shapes/turbo_mask_rcnn_R18_FPN.py
"""

import os

import detectron2.data.transforms as T
import yaml
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from turbo.backbone import LastLevelMaxPool
from turbo.lazy import use_turbo

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHANNELS = 64
_LEVELS = ["p2", "p3", "p4"]
_SCALES = (1.0 / 4, 1.0 / 8, 1.0 / 16)

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(depth=18, norm="BN"),
    out_features=["res2", "res3", "res4"],
    freeze_at=0,
)
model.backbone.out_channels = _CHANNELS
model.backbone.top_block = L(LastLevelMaxPool)(in_feature="p4")

rpn = model.proposal_generator
rpn.in_features = _LEVELS + ["p5"]
rpn.head.in_channels = _CHANNELS
rpn.anchor_generator.sizes = [[8], [16], [32], [64]]
rpn.anchor_generator.strides = [4, 8, 16, 32]
rpn.pre_nms_topk = (1000, 1000)
rpn.post_nms_topk = (500, 500)

heads = model.roi_heads
heads.num_classes = 6
heads.batch_size_per_image = 128
heads.box_in_features = _LEVELS
heads.box_pooler.scales = _SCALES
heads.box_head.input_shape = ShapeSpec(channels=_CHANNELS, height=7, width=7)
heads.box_head.fc_dims = [256, 256]
heads.box_predictor.input_shape = ShapeSpec(channels=256)
heads.mask_in_features = _LEVELS
heads.mask_pooler.scales = _SCALES
heads.mask_head.input_shape = ShapeSpec(channels=_CHANNELS, width=14, height=14)
heads.mask_head.conv_dims = [_CHANNELS] * 5
# Turbo with the package defaults and the yacs config's score map, fitted for this model
# (projects/turbo/fit_score_map.py)
with open(os.path.join(_REPO, "configs", "shapes", "turbo_mask_rcnn_R18_FPN.yaml")) as _f:
    _SCORE_MAP = yaml.safe_load(_f)["MODEL"]["TURBO"]["SCORE_MAP"]
use_turbo(model, score_map=_SCORE_MAP)

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(224, 256, 288), sample_style="choice", max_size=512),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.instance_mask_format = "bitmask"
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=256, max_size=512)
]
dataloader.test.num_workers = 1
dataloader.evaluator.output_dir = "${...train.output_dir}/inference/${..test.dataset.names}"

train = model_zoo.get_config("common/train.py").train
train.init_checkpoint = os.path.join(_REPO, "checkpoints", "shapes_mask_rcnn_R18_FPN.pth")
train.output_dir = "./output/lazy_shapes_mask_rcnn_R18_FPN"
train.max_iter = 1800
train.checkpointer.period = 300
train.eval_period = 1800

optimizer = model_zoo.get_config("common/optim.py").SGD
optimizer.lr = 0.02
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[1400, 1700], num_updates=1800
    ),
    warmup_length=200 / 1800,
    warmup_factor=0.001,
)
