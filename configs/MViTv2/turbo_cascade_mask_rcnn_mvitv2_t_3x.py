"""Cascade Mask R-CNN with an MViTv2-T backbone and FPN, 36 epochs on COCO, with
Turbo-Inference and the model zoo's trained weights (COCO: 52.2 box AP, 45.0 mask AP)::

    python projects/turbo/lazyconfig_train_net.py --eval-only \
        --config-file configs/MViTv2/turbo_cascade_mask_rcnn_mvitv2_t_3x.py

Detectron2's shipped ``common/models/mask_rcnn_fpn.py`` with MViTv2-T as the FPN's bottom-up
network, three cascade stages of 4 convolutions (synchronised batch norm) and one 1024-d
fully connected layer, as published. To train rather than evaluate, set
``train.init_checkpoint`` to the ImageNet-pretrained backbone (:data:`IN1K_MVITV2_T`).
"""

from functools import partial

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.layers.batch_norm import NaiveSyncBatchNorm
from detectron2.modeling import MViT
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from torch import nn

from turbo.lazy import make_cascade, use_turbo

IN1K_MVITV2_T = "detectron2://ImageNetPretrained/mvitv2/MViTv2_T_in1k.pyth"

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
constants = model_zoo.get_config("common/data/constants.py").constants
model.pixel_mean = constants.imagenet_rgb256_mean
model.pixel_std = constants.imagenet_rgb256_std
model.input_format = "RGB"
model.backbone.bottom_up = L(MViT)(
    embed_dim=96,
    depth=10,
    num_heads=1,
    last_block_indexes=(0, 2, 7, 9),
    residual_pooling=True,
    drop_path_rate=0.2,
    norm_layer=partial(nn.LayerNorm, eps=1e-6),
    out_features=("scale2", "scale3", "scale4", "scale5"),
)
model.backbone.in_features = "${.bottom_up.out_features}"
model.proposal_generator.head.conv_dims = [-1, -1]


def _sync_bn(channels):
    return NaiveSyncBatchNorm(channels, stats_mode="N")


make_cascade(
    model.roi_heads,
    L(FastRCNNConvFCHead)(
        input_shape=ShapeSpec(channels=256, height=7, width=7),
        conv_dims=[256, 256, 256, 256],
        fc_dims=[1024],
        conv_norm=_sync_bn,
    ),
)
model.roi_heads.mask_head.conv_norm = _sync_bn
use_turbo(model)  # the cascade recipe

# multi-scale training with random crops; test at 800 / 1333
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomApply)(
        tfm_or_aug=L(T.AugmentationList)(
            augs=[
                L(T.ResizeShortestEdge)(short_edge_length=[400, 500, 600], sample_style="choice"),
                L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
            ]
        ),
        prob=0.5,
    ),
    L(T.ResizeShortestEdge)(
        short_edge_length=tuple(range(480, 801, 32)), sample_style="choice", max_size=1333
    ),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 64

train = model_zoo.get_config("common/train.py").train
train.init_checkpoint = (
    "detectron2://MViTv2/cascade_mask_rcnn_mvitv2_t_3x/f308344828/model_final_c6967a.pkl"
)
train.amp.enabled = True
train.ddp.fp16_compression = True
train.max_iter = 67500  # 36 epochs at 64 images per iteration

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.lr = 1.6e-4
optimizer.params.overrides = {
    key: {"weight_decay": 0.0} for key in ("pos_embed", "rel_pos_h", "rel_pos_w")
}

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[52500, 62500, 67500]),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)
