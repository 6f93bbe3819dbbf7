"""Detectron2's Panoptic FPN R50-FPN 1x on COCO (the LazyConfig the installed package ships),
with Turbo-Inference and the model zoo's trained weights (COCO: 37.6 box AP, 34.7 mask AP,
39.4 PQ)::

    python projects/turbo/lazyconfig_train_net.py --eval-only \
        --config-file configs/COCO-PanopticSegmentation/turbo_panoptic_fpn_R_50_1x.py

Turbo changes the instances only; the semantic head and the panoptic merging (the model's
``combine_*`` arguments, Detectron2's defaults) are Detectron2's. ``dataloader.evaluator``
gives box and mask AP, semantic segmentation metrics and PQ.
"""

from detectron2 import model_zoo

from turbo.lazy import use_turbo

_base = model_zoo.get_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py", trained=True)
model = _base.model
dataloader = _base.dataloader
optimizer = _base.optimizer
lr_multiplier = _base.lr_multiplier
train = _base.train  # train.init_checkpoint: the model zoo's weights
use_turbo(model)
