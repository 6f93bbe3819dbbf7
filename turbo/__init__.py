"""Turbo-Inference for Detectron2: training-free detection-segmentation feedback.

Importing this package registers ``TurboROIHeads`` and ``TurboCascadeROIHeads`` in
Detectron2's ``ROI_HEADS_REGISTRY`` (and the small backbone of the shapes reference models,
``build_resnet_fpn_p4_backbone``, in ``BACKBONE_REGISTRY``).
"""
try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without Detectron2
    raise ImportError(
        "turbo needs Detectron2, which is not on PyPI: install it from its git repository "
        "first (pip install 'git+https://github.com/facebookresearch/detectron2.git@<commit>', "
        "the commit is pinned in README.md)"
    ) from e

from . import backbone, ops
from .config import TurboParams, add_turbo_config
from .heads import TurboCascadeROIHeads, TurboROIHeads

__all__ = ["add_turbo_config", "TurboParams", "TurboROIHeads", "TurboCascadeROIHeads", "ops"]
__version__ = "0.1.0"
