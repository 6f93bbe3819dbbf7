"""Turbo on every Detectron2 model family with ROI heads, each a small randomly initialised
model built from the real config file with reduced sizes: yacs Mask R-CNN and cascade,
Panoptic FPN (R50, and R101 with deformable convolutions, group norm and a cascade; yacs and
LazyConfig), Cityscapes and LVIS (v0.5, v1) Mask R-CNN, new-baselines LazyConfig Mask R-CNN,
ViTDet Mask and Cascade, MViTv2 Cascade, PointRend, a user's own head subclass, and box-only
Faster R-CNN / Cascade R-CNN.

For each: with no cycle and Soft-NMS off the outputs equal the upstream heads' exactly (for
Panoptic FPN the semantic and panoptic outputs too); with Turbo on, boxes, scores, classes and
masks have the right shapes and frames, every mask is the mask head's prediction in its output
box, and Panoptic FPN's panoptic segments are its instances' masks and semantic classes. The
configs of model-zoo models are the zoo's configs but for the turbo heads and the zoo's trained
weights."""

import copy
import os
import types

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, LazyConfig, configurable, instantiate
from detectron2.layers import DeformConv
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    Res5ROIHeads,
    StandardROIHeads,
)
from detectron2.structures import Instances
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from turbo import TurboMixin, TurboParams, turbo_heads
from turbo.benchmark.runner import run_heads, run_prefix
from turbo.benchmark.synthetic import zero_box_regression
from turbo.build import get_turbo_cfg
from turbo.config import CASCADE_RECIPE, MASK_RCNN_RECIPE

from helpers import (
    CONFIGS,
    assert_mask_head_is_upstreams,
    assert_masks_predicted_in_boxes,
    assert_same_instances,
    assert_valid_model_outputs,
    assert_valid_roi_outputs,
    build,
    make_images,
    published_mechanisms,
    randomize_heads,
    tiny_cfg,
)

OFF = {"MODEL.TURBO.NUM_ITERS": 0, "MODEL.TURBO.SOFT_NMS.ENABLED": False}
ON = {"MODEL.TURBO.NUM_ITERS": 2}

# ------------------------------------------------------------------------------------------
# A user's own heads: a StandardROIHeads subclass with an argument of its own and its own
# mask inference, given Turbo with the public mixin.
# ------------------------------------------------------------------------------------------


class SharpMaskROIHeads(StandardROIHeads):
    """Masks raised to a power at inference (a stand-in for a user's custom mask logic)."""

    @configurable
    def __init__(self, *, mask_power: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_power = mask_power

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "mask_power": 2.0}

    def _forward_mask(self, features, instances):
        out = super()._forward_mask(features, instances)
        if not self.training and self.mask_on:
            for x in out:
                x.pred_masks = x.pred_masks**self.mask_power
        return out


if "TurboSharpMaskROIHeads" not in ROI_HEADS_REGISTRY:
    ROI_HEADS_REGISTRY.register(SharpMaskROIHeads)

    @ROI_HEADS_REGISTRY.register()
    class TurboSharpMaskROIHeads(TurboMixin, SharpMaskROIHeads):
        """The user's heads with Turbo-Inference."""


# ------------------------------------------------------------------------------------------
# yacs families: (config under configs/, turbo head, upstream head, extra tiny overrides)
# ------------------------------------------------------------------------------------------
POINTREND = {
    "MODEL.POINT_HEAD.NUM_CLASSES": 3,
    "MODEL.POINT_HEAD.FC_DIM": 32,
    "MODEL.ROI_MASK_HEAD.FC_DIM": 64,
    "TEST.DETECTIONS_PER_IMAGE": 10,
}
PANOPTIC = {
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 4,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,  # group norm's 32 groups
    # the zoo's 4096 pixels for a stuff region, scaled to the tiny images
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": 64,
}
# R101 with deformable res3-res5 and group norm as configured; widths that group norm's 32
# groups divide. The random cascade's scores stay below 0.5 once rescored by Maskness
# (weight 1.0): a lower merge threshold lets its instances into the panoptic map.
PANOPTIC_DCONV_GN = {
    **PANOPTIC,
    "MODEL.RESNETS.DEPTH": 101,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 32,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": 0.2,
}
# LVIS's 300 detections per image, not the tiny models' 40 (its score threshold 1e-4 is the
# config's)
LVIS = {"MODEL.ROI_HEADS.NUM_CLASSES": 8, "TEST.DETECTIONS_PER_IMAGE": 300}
YACS = {
    "mask_rcnn": (
        "COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml",
        "TurboROIHeads",
        "StandardROIHeads",
        {},
    ),
    "cascade": (
        "COCO-InstanceSegmentation/turbo_cascade_mask_rcnn_R_50_FPN_3x.yaml",
        "TurboCascadeROIHeads",
        "CascadeROIHeads",
        {},
    ),
    "pointrend": (
        "PointRend/turbo_pointrend_rcnn_R_50_FPN_3x_coco.yaml",
        "TurboROIHeads",
        "StandardROIHeads",
        POINTREND,
    ),
    "user_subclass": (
        "COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml",
        "TurboSharpMaskROIHeads",
        "SharpMaskROIHeads",
        {},
    ),
    "panoptic_fpn": (
        "COCO-PanopticSegmentation/turbo_panoptic_fpn_R_50_3x.yaml",
        "TurboROIHeads",
        "StandardROIHeads",
        PANOPTIC,
    ),
    "panoptic_fpn_dconv_cascade_gn": (
        "Misc/turbo_panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml",
        "TurboCascadeROIHeads",
        "CascadeROIHeads",
        PANOPTIC_DCONV_GN,
    ),
    "cityscapes": (
        "Cityscapes/turbo_mask_rcnn_R_50_FPN.yaml",
        "TurboROIHeads",
        "StandardROIHeads",
        {},
    ),
    "lvis_v0.5": (
        "LVISv0.5-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_1x.yaml",
        "TurboROIHeads",
        "StandardROIHeads",
        LVIS,
    ),
    "lvis_v1": (
        "LVISv1-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_1x.yaml",
        "TurboROIHeads",
        "StandardROIHeads",
        LVIS,
    ),
}


def deform_offsets(model, seed: int = 0):
    """Give the deformable convolutions' offset layers non-trivial weights, in place:
    Detectron2 initialises them at zero, where a deformable convolution is a plain one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv2_offset" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _yacs_pair(family, turbo):
    config, head, parent, extra = YACS[family]
    up = deform_offsets(build(tiny_cfg(parent, base=config, **extra)))
    tb = build(tiny_cfg(head, base=config, **extra, **turbo), state_dict=up.state_dict())
    return up, tb


# ------------------------------------------------------------------------------------------
# LazyConfig families: (config, overrides that make the model small)
# ------------------------------------------------------------------------------------------
_SMALL_HEADS = [
    "model.roi_heads.num_classes=3",
    "model.proposal_generator.pre_nms_topk=[200,100]",
    "model.proposal_generator.post_nms_topk=[40,20]",
]
_SMALL_VIT = [
    "model.backbone.net.embed_dim=48",
    "model.backbone.net.depth=2",
    "model.backbone.net.num_heads=2",
    "model.backbone.net.window_block_indexes=[0]",
    "model.backbone.net.img_size=128",
    "model.backbone.net.window_size=4",
    "model.backbone.square_pad=128",
]
LAZY = {
    "new_baselines": ("new_baselines/turbo_mask_rcnn_R_50_FPN_100ep_LSJ.py", _SMALL_HEADS),
    "vitdet_mask": ("ViTDet/turbo_mask_rcnn_vitdet_b_100ep.py", _SMALL_HEADS + _SMALL_VIT),
    "vitdet_cascade": (
        "ViTDet/turbo_cascade_mask_rcnn_vitdet_b_100ep.py",
        _SMALL_HEADS + _SMALL_VIT,
    ),
    "mvitv2_cascade": (
        "MViTv2/turbo_cascade_mask_rcnn_mvitv2_t_3x.py",
        _SMALL_HEADS
        + [
            "model.backbone.bottom_up.embed_dim=32",
            "model.backbone.bottom_up.depth=4",
            "model.backbone.bottom_up.last_block_indexes=[0,1,2,3]",
        ],
    ),
    "panoptic_fpn_lazy": (
        "COCO-PanopticSegmentation/turbo_panoptic_fpn_R_50_1x.py",
        _SMALL_HEADS
        + [
            "model.sem_seg_head.num_classes=4",
            "model.sem_seg_head.conv_dims=32",
            "model.combine_stuff_area_thresh=64",
        ],
    ),
}


def _lazy_pair(family, turbo_overrides):
    path, small = LAZY[family]
    cfg = LazyConfig.load(os.path.join(CONFIGS, path))
    LazyConfig.apply_overrides(cfg, small)
    upstream = copy.deepcopy(cfg.model)
    target = (
        locate(cfg.model.roi_heads._target_)
        if isinstance(cfg.model.roi_heads._target_, str)
        else cfg.model.roi_heads._target_
    )
    # the upstream heads: the turbo class's Detectron2 parent, without the turbo argument
    upstream.roi_heads._target_ = next(
        c for c in target.__mro__[1:] if c in (StandardROIHeads, CascadeROIHeads)
    )
    upstream.roi_heads.pop("turbo")
    LazyConfig.apply_overrides(cfg, [f"model.roi_heads.turbo.{k}" for k in turbo_overrides])
    torch.manual_seed(0)
    up = zero_box_regression(randomize_heads(instantiate(upstream))).eval()
    tb = instantiate(cfg.model).eval()
    tb.load_state_dict(up.state_dict())
    for m in (up, tb):  # a few detections per image: the heads are full width
        heads = m.roi_heads
        for p in (
            heads.box_predictor if isinstance(heads, CascadeROIHeads) else [heads.box_predictor]
        ):
            p.test_topk_per_image = 8
    return up, tb


LAZY_OFF = ["num_iters=0", "soft_nms.enabled=False"]
LAZY_ON = ["num_iters=2"]


def _pair(family, on):
    if family in YACS:
        return _yacs_pair(family, ON if on else OFF)
    return _lazy_pair(family, LAZY_ON if on else LAZY_OFF)


FAMILIES = list(YACS) + list(LAZY)
PANOPTIC_FAMILIES = ("panoptic_fpn", "panoptic_fpn_dconv_cascade_gn", "panoptic_fpn_lazy")


def assert_valid_panoptic_outputs(outputs, inputs, model):
    """Panoptic FPN's outputs in the original image frame: per-class semantic scores, and a
    panoptic map whose thing segments lie in their instances' masks (class and score theirs,
    the score above the merge's threshold) and whose stuff segments are regions of their
    semantic class of at least the merge's area."""
    num_classes = model.sem_seg_head.predictor.out_channels
    for r, x in zip(outputs, inputs):
        h, w = x["height"], x["width"]
        inst, sem = r["instances"], r["sem_seg"]
        seg, info = r["panoptic_seg"]
        assert sem.shape == (num_classes, h, w) and torch.isfinite(sem).all()
        assert seg.shape == (h, w) and seg.dtype == torch.int32
        assert set(seg.unique().tolist()) - {0} == {s["id"] for s in info}
        labels = sem.argmax(dim=0)
        for s in info:
            region = seg == s["id"]
            if s["isthing"]:
                i = s["instance_id"]
                assert s["category_id"] == int(inst.pred_classes[i])
                assert s["score"] == float(inst.scores[i])
                assert s["score"] >= model.combine_instances_score_thresh
                assert not (region & ~inst.pred_masks[i]).any()
            else:
                assert not (region & (labels != s["category_id"])).any()
                assert int(region.sum()) == s["area"] >= model.combine_stuff_area_thresh


@pytest.mark.parametrize("family", FAMILIES)
def test_no_cycle_without_soft_nms_is_upstream(family):
    up, tb = _pair(family, on=False)
    images = make_images()
    with torch.no_grad():
        a, b = up(copy.deepcopy(images)), tb(copy.deepcopy(images))
    assert sum(len(x["instances"]) for x in a) > 0, family
    panoptic = family in PANOPTIC_FAMILIES
    for ra, rb in zip(a, b):
        assert (
            set(ra)
            == set(rb)
            == ({"instances", "sem_seg", "panoptic_seg"} if panoptic else {"instances"})
        )
        assert_same_instances(ra["instances"], rb["instances"])
        if panoptic:
            assert torch.equal(ra["sem_seg"], rb["sem_seg"])
            (seg_a, info_a), (seg_b, info_b) = ra["panoptic_seg"], rb["panoptic_seg"]
            assert torch.equal(seg_a, seg_b) and info_a == info_b
    if panoptic:  # the merge had things and stuff to merge
        segments = [s for r in a for s in r["panoptic_seg"][1]]
        assert {s["isthing"] for s in segments} == {True, False}, family


@pytest.mark.parametrize("family", FAMILIES)
def test_turbo_outputs(family):
    up, tb = _pair(family, on=True)
    heads = tb.roi_heads
    assert isinstance(heads, TurboMixin) and heads.turbo.num_iters == 2
    cascade = isinstance(heads, CascadeROIHeads)
    assert heads.turbo.box_thresh == (CASCADE_RECIPE if cascade else MASK_RCNN_RECIPE).box_thresh
    images = make_images()
    prefix = run_prefix(tb, images)
    out = run_heads(tb, prefix)
    assert sum(len(o) for o in out) > 0
    mask_size = 224 if family == "pointrend" else 28
    if family.startswith("lvis"):  # LVIS's score threshold and detections per image
        assert heads.box_predictor.test_score_thresh == 1e-4
        assert heads.box_predictor.test_topk_per_image == 300
        # Soft-NMS keeps detections below its default min_score (0.001), down to the threshold
        with torch.no_grad():
            scores = torch.cat([d.scores for d in heads.detect(prefix.features, prefix.proposals)])
        assert 1e-4 <= float(scores.min()) < 1e-3
    for o, size in zip(out, prefix.images.image_sizes):
        assert o.image_size == size
        assert_valid_roi_outputs(o, mask_size)
        assert o.has("maskness")
    # with the published cycle, the masks are the (user's) mask head's, predicted in the
    # output boxes (the defaults resample some masks into their box and fuse others)
    with heads.turbo_params(published_mechanisms(heads.turbo)):
        published = run_heads(tb, prefix)
    assert_masks_predicted_in_boxes(heads, prefix.features, published)
    assert_mask_head_is_upstreams(heads, prefix.features, published)
    with torch.no_grad():
        res = tb(copy.deepcopy(images))
    assert_valid_model_outputs(res, images)
    if family in PANOPTIC_FAMILIES:
        assert_valid_panoptic_outputs(res, images, tb)
        assert any(s["isthing"] for r in res for s in r["panoptic_seg"][1]), family
    # eval with autograd on (a user calling the model directly): the same outputs, and the
    # scores carry the gradient of the box head, as upstream's do
    with torch.enable_grad():
        res_grad = tb(copy.deepcopy(images))
    for a, b in zip(res, res_grad):
        assert_same_instances(a["instances"], b["instances"])
    scores = torch.cat([r["instances"].scores for r in res_grad])
    assert scores.requires_grad, family


# families whose upstream model cannot run under CPU bfloat16 autocast: the error it raises
NO_CPU_BFLOAT16 = {
    "panoptic_fpn_dconv_cascade_gn": "deformable_im2col\" not implemented for 'BFloat16'"
}


@pytest.mark.parametrize("family", FAMILIES)
def test_autocast_bfloat16(family):
    """Under ``torch.autocast`` (bfloat16 on CPU) every family runs where its upstream model
    does, and its outputs have the dtypes the upstream heads give under autocast (box-head
    scores in bfloat16); where the upstream model fails (torchvision's deformable convolution
    has no CPU bfloat16 kernel), the turbo model fails with the same error."""
    up, tb = _pair(family, on=True)
    images = make_images()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        if family in NO_CPU_BFLOAT16:  # the backbone fails upstream, before any ROI head
            for model in (up, tb):
                with pytest.raises(RuntimeError, match=NO_CPU_BFLOAT16[family]):
                    model(copy.deepcopy(images))
            return
        a, b = up(copy.deepcopy(images)), tb(copy.deepcopy(images))
    assert_valid_model_outputs(b, images)
    assert sum(len(r["instances"]) for r in b) > 0, family
    for ra, rb in zip(a, b):
        ia, ib = ra["instances"], rb["instances"]
        for name in ("scores", "pred_masks", "pred_classes"):
            assert ib.get(name).dtype == ia.get(name).dtype, (family, name)
        assert ib.pred_boxes.tensor.dtype == ia.pred_boxes.tensor.dtype
        assert ib.maskness.dtype == ib.scores.dtype


def test_panoptic_dconv_cascade_gn_keeps_its_parts():
    """The reduced R101 panoptic cascade still has what its config names: 23 res4 blocks,
    deformable convolutions in res3-res5 (with the offsets the family tests give them), group
    norm in the backbone, FPN and mask head, three cascade stages."""
    config, _, parent, extra = YACS["panoptic_fpn_dconv_cascade_gn"]
    model = deform_offsets(build(tiny_cfg(parent, base=config, **extra)))
    bottom_up = model.backbone.bottom_up
    assert [len(getattr(bottom_up, f"res{i}")) for i in range(2, 6)] == [3, 4, 23, 3]
    for i in range(2, 6):
        deform = [m for m in getattr(bottom_up, f"res{i}").modules() if isinstance(m, DeformConv)]
        assert len(deform) == (0 if i == 2 else len(getattr(bottom_up, f"res{i}"))), i
        assert all(
            b.conv2_offset.weight.abs().sum() > 0
            for b in getattr(bottom_up, f"res{i}")
            if hasattr(b, "conv2_offset")
        )
    for part in (bottom_up, model.backbone.fpn_lateral2, model.roi_heads.mask_head):
        assert any(isinstance(m, torch.nn.GroupNorm) for m in part.modules())
    assert model.roi_heads.num_cascade_stages == 3


def test_user_subclass_through_the_factory():
    cfg = tiny_cfg("SharpMaskROIHeads", base=YACS["user_subclass"][0])
    cls = turbo_heads(SharpMaskROIHeads)
    assert cls is turbo_heads(SharpMaskROIHeads) and issubclass(cls, SharpMaskROIHeads)
    assert cls.__name__ == "TurboSharpMaskROIHeads" and cls.recipe() == MASK_RCNN_RECIPE
    from detectron2.modeling import build_backbone

    heads = cls(cfg, build_backbone(cfg).output_shape())  # yacs construction path
    assert heads.mask_power == 2.0 and heads.turbo.box_thresh == MASK_RCNN_RECIPE.box_thresh
    assert turbo_heads(StandardROIHeads).__name__ == "TurboROIHeads"
    assert turbo_heads(CascadeROIHeads).recipe() == CASCADE_RECIPE

    class MyCascade(CascadeROIHeads):
        pass

    assert turbo_heads(MyCascade).recipe() == CASCADE_RECIPE
    with pytest.raises(TypeError, match="StandardROIHeads or CascadeROIHeads subclass"):
        turbo_heads(torch.nn.Module)
    with pytest.raises(TypeError, match="does not support Res5ROIHeads .the C4 models'.+res5 pass"):
        turbo_heads(Res5ROIHeads)


# ------------------------------------------------------------------------------------------
# Box-only models: Soft-NMS without a mask head
# ------------------------------------------------------------------------------------------
BOX_ONLY = {
    "faster_rcnn": (
        "COCO-Detection/turbo_faster_rcnn_R_50_FPN_3x.yaml",
        "TurboROIHeads",
        "StandardROIHeads",
    ),
    "cascade_rcnn": (
        "COCO-Detection/turbo_cascade_rcnn_R_50_FPN_1x.yaml",
        "TurboCascadeROIHeads",
        "CascadeROIHeads",
    ),
}


@pytest.mark.parametrize("family", list(BOX_ONLY))
def test_box_only_models(family):
    config, head, parent = BOX_ONLY[family]
    up = build(tiny_cfg(parent, base=config))
    assert not up.roi_heads.mask_on
    images = make_images()
    with torch.no_grad():
        ref = up(copy.deepcopy(images))
    assert sum(len(x["instances"]) for x in ref) > 0

    def run(**turbo):
        m = build(tiny_cfg(head, base=config, **turbo), state_dict=up.state_dict())
        with torch.no_grad():
            return m(copy.deepcopy(images))

    # hard NMS through the turbo heads: upstream exactly
    for a, b in zip(ref, run(**{"MODEL.TURBO.SOFT_NMS.ENABLED": False})):
        assert_same_instances(a["instances"], b["instances"])
    # Turbo's detection stage with hard suppression: the same detections
    hard = run(**{"MODEL.TURBO.SOFT_NMS.METHOD": "hard", "MODEL.TURBO.SOFT_NMS.MIN_SCORE": 0.0})
    for a, b in zip(ref, hard):
        ia, ib = a["instances"], b["instances"]
        assert len(ia) == len(ib) and not ib.has("pred_masks")
        torch.testing.assert_close(ib.pred_boxes.tensor, ia.pred_boxes.tensor)
        torch.testing.assert_close(ib.scores, ia.scores)
    # Soft-NMS (the default): decayed duplicates instead of dropped ones, boxes only
    soft = run()
    assert sum(len(x["instances"]) for x in soft) >= sum(len(x["instances"]) for x in ref)
    assert_valid_model_outputs(soft, images, masks=False)
    for r in soft:
        assert not r["instances"].has("pred_masks") and not r["instances"].has("maskness")
    # the package defaults (NUM_ITERS unset): Soft-NMS alone, the same detections
    for a, b in zip(soft, run(**{"MODEL.TURBO.NUM_ITERS": -1})):
        assert_same_instances(a["instances"], b["instances"])
    # cycles asked for without a mask head: refused, naming the key
    with pytest.raises(ValueError, match="MODEL.TURBO.NUM_ITERS is 1, but the model has no"):
        build(tiny_cfg(head, base=config, **{"MODEL.TURBO.NUM_ITERS": 1}))


def test_keypoint_rcnn():
    """Keypoint R-CNN: Soft-NMS off is upstream exactly (keypoints included); Soft-NMS gives
    keypoints predicted on its boxes; cycles are refused (no mask head)."""
    config = "COCO-Keypoints/turbo_keypoint_rcnn_R_50_FPN_3x.yaml"
    kp = {"MODEL.ROI_HEADS.NUM_CLASSES": 1, "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS": (32, 32)}
    up = build(tiny_cfg("StandardROIHeads", base=config, **kp))
    assert up.roi_heads.keypoint_on and not up.roi_heads.mask_on
    images = make_images()
    with torch.no_grad():
        ref = up(copy.deepcopy(images))
    assert sum(len(x["instances"]) for x in ref) > 0

    def model(**turbo):
        return build(
            tiny_cfg("TurboROIHeads", base=config, **kp, **turbo), state_dict=up.state_dict()
        )

    with torch.no_grad():
        off = model(**{"MODEL.TURBO.SOFT_NMS.ENABLED": False})(copy.deepcopy(images))
        soft_model = model()
        soft = soft_model(copy.deepcopy(images))
    for a, b in zip(ref, off):
        assert_same_instances(a["instances"], b["instances"])
        torch.testing.assert_close(a["instances"].pred_keypoints, b["instances"].pred_keypoints)
    assert sum(len(x["instances"]) for x in soft) >= sum(len(x["instances"]) for x in ref)
    assert_valid_model_outputs(soft, images, masks=False)
    # the keypoints are the upstream keypoint head's on the Soft-NMS boxes
    heads = soft_model.roi_heads
    with torch.no_grad():
        batched = soft_model.preprocess_image(copy.deepcopy(images))
        features = soft_model.backbone(batched.tensor)
        proposals, _ = soft_model.proposal_generator(batched, features)
        det = heads.detect(features, proposals)
        given = [
            Instances(d.image_size, pred_boxes=d.pred_boxes, pred_classes=d.pred_classes)
            for d in det
        ]
        want = heads.forward_with_given_boxes(features, given)
        got = heads._forward_turbo(features, proposals)
    for w, g in zip(want, got):
        assert len(g) > 0 and g.pred_keypoints.shape == (len(g), 17, 3)
        torch.testing.assert_close(g.pred_keypoints, w.pred_keypoints)
    with pytest.raises(ValueError, match="MODEL.TURBO.NUM_ITERS is 1, but the model has no"):
        model(**{"MODEL.TURBO.NUM_ITERS": 1})


def test_every_family_config_loads_without_a_source_checkout():
    """The configs reach Detectron2's own configs through the installed package only."""
    for path, _ in LAZY.values():
        cfg = LazyConfig.load(os.path.join(CONFIGS, path))
        assert cfg.train.init_checkpoint.startswith(("detectron2://", "https://"))
        assert "turbo" in cfg.model.roi_heads
        assert isinstance(instantiate(cfg.model.roi_heads.turbo), TurboParams)


# turbo config -> (its model-zoo config, whether the zoo has trained weights for it)
ZOO = {
    "COCO-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_3x.yaml": (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
        True,
    ),
    "COCO-InstanceSegmentation/turbo_cascade_mask_rcnn_R_50_FPN_3x.yaml": (
        "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
        True,
    ),
    "COCO-Detection/turbo_faster_rcnn_R_50_FPN_3x.yaml": (
        "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
        True,
    ),
    "COCO-Keypoints/turbo_keypoint_rcnn_R_50_FPN_3x.yaml": (
        "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml",
        True,
    ),
    "COCO-PanopticSegmentation/turbo_panoptic_fpn_R_50_3x.yaml": (
        "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
        True,
    ),
    "Misc/turbo_panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml": (
        "Misc/panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml",
        True,
    ),
    "Cityscapes/turbo_mask_rcnn_R_50_FPN.yaml": ("Cityscapes/mask_rcnn_R_50_FPN.yaml", True),
    "LVISv0.5-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_1x.yaml": (
        "LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        True,
    ),
    "LVISv1-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_1x.yaml": (
        "LVISv1-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        False,
    ),
}


def _flat(node: CfgNode, prefix: str = ""):
    out = {}
    for k, v in node.items():
        if isinstance(v, CfgNode):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@pytest.mark.parametrize("config", list(ZOO))
def test_config_is_its_model_zoo_config(config):
    """Every key of a turbo yacs config is its model-zoo config's, but the ROI heads (their
    turbo version), the weights (the zoo's trained ones where it has them, else the zoo
    config's own) and MODEL.TURBO; Soft-NMS keeps every detection the score threshold keeps."""
    zoo, trained = ZOO[config]
    ours = get_turbo_cfg()
    ours.merge_from_file(os.path.join(CONFIGS, config))
    theirs = get_turbo_cfg()
    theirs.merge_from_file(model_zoo.get_config_file(zoo))
    if trained:
        url = model_zoo.get_checkpoint_url(zoo)
        theirs.MODEL.WEIGHTS = "detectron2://" + url.split("/detectron2/", 1)[1]
    else:
        with pytest.raises(RuntimeError, match="not available"):
            model_zoo.get_checkpoint_url(zoo)
    heads = ROI_HEADS_REGISTRY.get(theirs.MODEL.ROI_HEADS.NAME)
    theirs.MODEL.ROI_HEADS.NAME = turbo_heads(heads).__name__
    a = {k: v for k, v in _flat(ours).items() if not k.startswith("MODEL.TURBO.")}
    b = {k: v for k, v in _flat(theirs).items() if not k.startswith("MODEL.TURBO.")}
    assert a.keys() == b.keys()
    assert {k: (a[k], b[k]) for k in a if a[k] != b[k]} == {}
    assert ours.MODEL.TURBO.SOFT_NMS.MIN_SCORE <= ours.MODEL.ROI_HEADS.SCORE_THRESH_TEST


# LazyConfig turbo config -> its model-zoo config
LAZY_ZOO = {
    f"new_baselines/turbo_mask_rcnn_R_50_FPN_{n}ep_LSJ.py": (
        f"new_baselines/mask_rcnn_R_50_FPN_{n}ep_LSJ.py"
    )
    for n in (100, 400)
}
LAZY_ZOO["COCO-PanopticSegmentation/turbo_panoptic_fpn_R_50_1x.py"] = (
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py"
)


def _plain(node):
    """A LazyConfig node as plain containers, each function as its code (a config loaded
    twice makes its lambdas twice)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node.__code__ if isinstance(node, types.FunctionType) else node


@pytest.mark.parametrize("config", list(LAZY_ZOO))
def test_lazy_config_is_its_model_zoo_config(config):
    """A LazyConfig of a model-zoo model is the zoo's, its ROI heads their turbo version: the
    same model, data, optimiser, schedule and training, and the zoo's trained weights."""
    ours = LazyConfig.load(os.path.join(CONFIGS, config))
    theirs = model_zoo.get_config(LAZY_ZOO[config], trained=True)
    heads = ours.model.roi_heads
    assert heads.pop("turbo") is not None
    assert heads._target_ is turbo_heads(theirs.model.roi_heads._target_)
    heads._target_ = theirs.model.roi_heads._target_
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        a, b = (_plain(OmegaConf.to_container(c[key])) for c in (ours, theirs))
        assert a == b, key


@pytest.mark.parametrize("version", ["v0.5", "v1"])
def test_lvis_configs_keep_the_low_scores_and_gate_the_re_prediction(version):
    """LVIS's operating point: scores down to 1e-4 (Soft-NMS's own floor lowered to it), 300
    detections per image, of which the top 50 get their masks re-predicted, whatever their
    score (no score gate: chosen on few-class models, it is not LVIS's)."""
    from turbo.build import load_config

    cfg = load_config(
        os.path.join(
            CONFIGS, f"LVIS{version}-InstanceSegmentation/turbo_mask_rcnn_R_50_FPN_1x.yaml"
        )
    )
    params = TurboParams.from_cfg(cfg)
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == params.soft_nms.min_score == 1e-4
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 300
    assert params.repredict_topk == 50 and params.repredict_min_score == 0.0
