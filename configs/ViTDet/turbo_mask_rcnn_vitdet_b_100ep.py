"""ViTDet Mask R-CNN, ViT-B backbone, 100 epochs of large-scale jitter on COCO, with
Turbo-Inference and the model zoo's trained weights (COCO: 51.6 box AP, 45.9 mask AP)::

    python projects/turbo/lazyconfig_train_net.py --eval-only \
        --config-file configs/ViTDet/turbo_mask_rcnn_vitdet_b_100ep.py

The model is Detectron2's shipped ``common/models/mask_rcnn_vitdet.py`` (ViT-B/16 with window
attention and a simple feature pyramid, LN heads); the data, optimiser and schedule follow
the published ViTDet recipe. To train rather than evaluate, set ``train.init_checkpoint`` to
the MAE-pretrained backbone (:data:`MAE_VIT_B`).
"""

from functools import partial

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from turbo.lazy import use_turbo

MAE_VIT_B = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"
IMAGE_SIZE = 1024

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
use_turbo(model)

# large-scale jitter: random scale 0.1-2.0 of a 1024 square, cropped to it; test at 1024
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(
        min_scale=0.1, max_scale=2.0, target_height=IMAGE_SIZE, target_width=IMAGE_SIZE
    ),
    L(T.FixedSizeCrop)(crop_size=(IMAGE_SIZE, IMAGE_SIZE), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True
dataloader.train.total_batch_size = 64
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=IMAGE_SIZE, max_size=IMAGE_SIZE)
]

train = model_zoo.get_config("common/train.py").train
train.init_checkpoint = (
    "detectron2://ViTDet/COCO/mask_rcnn_vitdet_b/f325346929/model_final_61ccd1.pkl"
)
train.amp.enabled = True
train.ddp.fp16_compression = True
train.max_iter = 184375  # 100 epochs at 64 images per iteration

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[163889, 177546], num_updates=train.max_iter
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)
