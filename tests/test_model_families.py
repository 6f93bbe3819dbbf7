"""Turbo on every Detectron2 model family with ROI heads, each a small randomly initialised
model built from the real config file with reduced sizes: yacs Mask R-CNN and cascade,
new-baselines LazyConfig Mask R-CNN, ViTDet Mask and Cascade, MViTv2 Cascade, PointRend, a
user's own head subclass, and box-only Faster R-CNN / Cascade R-CNN.

For each: with no cycle and Soft-NMS off the outputs equal the upstream heads' exactly; with
Turbo on, boxes, scores, classes and masks have the right shapes and frames, and every mask
is the mask head's prediction in its output box."""

import copy
import os

import pytest
import torch
from detectron2.config import LazyConfig, configurable, instantiate
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    Res5ROIHeads,
    StandardROIHeads,
)
from detectron2.structures import Instances
from detectron2.utils.registry import locate

from turbo import TurboMixin, TurboParams, turbo_heads
from turbo.benchmark.runner import run_heads, run_prefix
from turbo.config import CASCADE_RECIPE, MASK_RCNN_RECIPE
from turbo.testing import (
    assert_masks_predicted_in_boxes,
    assert_same_instances,
    assert_valid_model_outputs,
    assert_valid_roi_outputs,
    make_images,
    randomize_heads,
    zero_box_regression,
)

from helpers import CONFIGS, build, published_mechanisms, tiny_cfg

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
}


def _yacs_pair(family, turbo):
    config, head, parent, extra = YACS[family]
    up = build(tiny_cfg(parent, base=config, **extra))
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


@pytest.mark.parametrize("family", FAMILIES)
def test_no_cycle_without_soft_nms_is_upstream(family):
    up, tb = _pair(family, on=False)
    images = make_images()
    with torch.no_grad():
        a, b = up(copy.deepcopy(images)), tb(copy.deepcopy(images))
    assert sum(len(x["instances"]) for x in a) > 0, family
    for ra, rb in zip(a, b):
        assert_same_instances(ra["instances"], rb["instances"])


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
    for o, size in zip(out, prefix.images.image_sizes):
        assert o.image_size == size
        assert_valid_roi_outputs(o, mask_size)
        assert o.has("maskness")
    # with the published cycle, the masks are the (user's) mask head's, predicted in the
    # output boxes (the defaults resample some masks into their box and fuse others)
    with heads.turbo_params(published_mechanisms(heads.turbo)):
        published = run_heads(tb, prefix)
    assert_masks_predicted_in_boxes(heads, prefix.features, published)
    with torch.no_grad():
        res = tb(copy.deepcopy(images))
    assert_valid_model_outputs(res, images)


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
        got = heads.segment(features, det)
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
