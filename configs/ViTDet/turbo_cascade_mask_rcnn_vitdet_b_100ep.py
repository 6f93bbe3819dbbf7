"""ViTDet Cascade Mask R-CNN, ViT-B backbone, 100 epochs on COCO, with Turbo-Inference and the
model zoo's trained weights (COCO: 54.0 box AP, 46.7 mask AP)::

    python projects/turbo/lazyconfig_train_net.py --eval-only \
        --config-file configs/ViTDet/turbo_cascade_mask_rcnn_vitdet_b_100ep.py

The Mask R-CNN ViT-B config with three cascade stages (4 LN convolutions and one 1024-d
fully connected layer each).
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import FastRCNNConvFCHead

from turbo.lazy import make_cascade, use_turbo

from .turbo_mask_rcnn_vitdet_b_100ep import (
    model,
    train,
)

make_cascade(
    model.roi_heads,
    L(FastRCNNConvFCHead)(
        input_shape=ShapeSpec(channels=256, height=7, width=7),
        conv_dims=[256, 256, 256, 256],
        fc_dims=[1024],
        conv_norm="LN",
    ),
)
use_turbo(model)  # the cascade recipe

train.init_checkpoint = (
    "detectron2://ViTDet/COCO/cascade_mask_rcnn_vitdet_b/f325358525/model_final_435fa9.pkl"
)
