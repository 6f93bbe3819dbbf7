"""A ResNet-FPN backbone for ResNets that stop at res4 (the small shapes reference models)."""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["build_resnet_fpn_p4_backbone"]


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_p4_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN on ``MODEL.FPN.IN_FEATURES`` (e.g. res2..res4) plus a max-pooled extra level.

    Detectron2's ``build_resnet_fpn_backbone`` pools its extra level from "p5", which does not
    exist when the ResNet stops at res4 (no res5: a quarter of an R18's parameters); here the
    extra level is pooled from the last FPN level instead (p2..p4 -> p2..p5).
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_features = cfg.MODEL.FPN.IN_FEATURES
    top_block = LastLevelMaxPool()
    top_block.in_feature = "p" + str(int(bottom_up.output_shape()[in_features[-1]].stride).bit_length() - 1)
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
