"""Detectron2's new baseline Mask R-CNN R50-FPN, 400 epochs of large-scale jitter (the config the
installed package ships), with Turbo-Inference and the model zoo's trained weights::

    python projects/turbo/lazyconfig_train_net.py --eval-only \
        --config-file configs/new_baselines/turbo_mask_rcnn_R_50_FPN_400ep_LSJ.py
"""

from detectron2 import model_zoo

from turbo.lazy import use_turbo

_base = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_400ep_LSJ.py", trained=True)
model = _base.model
dataloader = _base.dataloader
optimizer = _base.optimizer
lr_multiplier = _base.lr_multiplier
train = _base.train  # train.init_checkpoint: the model zoo's weights
use_turbo(model)
