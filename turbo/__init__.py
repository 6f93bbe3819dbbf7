"""Turbo-Inference for Detectron2: training-free detection-segmentation feedback.

Importing this package registers ``TurboROIHeads`` and ``TurboCascadeROIHeads`` in
Detectron2's ``ROI_HEADS_REGISTRY`` (and the small backbone of the shapes reference models,
``build_resnet_fpn_p4_backbone``, in ``BACKBONE_REGISTRY``), and changes nothing else: no
warning filter, no logger. Programs that want Detectron2's and PyTorch's known notices
silenced call :func:`turbo.third_party_warnings.silence_known_warnings`.
"""

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without Detectron2
    raise ImportError(
        "turbo needs Detectron2, which is not on PyPI: install it from its git repository "
        "first (README.md, Install)"
    ) from e

from . import backbone, ops  # noqa: F401  (backbone registers the shapes backbone)
from .build import get_turbo_cfg
from .config import SoftNMSParams, TurboParams, add_turbo_config
from .heads import TurboCascadeROIHeads, TurboMixin, TurboROIHeads, turbo_heads

__all__ = [
    "add_turbo_config",
    "get_turbo_cfg",
    "TurboParams",
    "SoftNMSParams",
    "TurboMixin",
    "TurboROIHeads",
    "TurboCascadeROIHeads",
    "turbo_heads",
    "ops",
]
__version__ = "0.2.0"
