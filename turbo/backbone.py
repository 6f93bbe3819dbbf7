"""A ResNet-FPN backbone for ResNets that stop at res4 (the small shapes reference models)."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool as _D2LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["LastLevelMaxPool", "build_resnet_fpn_p4_backbone"]


class LastLevelMaxPool(_D2LastLevelMaxPool):
    """Detectron2's ``LastLevelMaxPool`` pooled from any FPN level ``in_feature`` (Detectron2's
    is fixed to "p5", which does not exist when the ResNet stops at res4)."""

    def __init__(self, in_feature: str = "p5"):
        super().__init__()
        self.in_feature = in_feature


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_p4_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN on ``MODEL.FPN.IN_FEATURES`` (e.g. res2..res4) plus a max-pooled extra level.

    Like Detectron2's ``build_resnet_fpn_backbone``, but the extra level is pooled from the
    last FPN level instead of "p5" (p2..p4 -> p2..p5): no res5, a quarter of an R18's
    parameters.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_features = cfg.MODEL.FPN.IN_FEATURES
    last_stride = bottom_up.output_shape()[in_features[-1]].stride
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(f"p{int(last_stride).bit_length() - 1}"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
