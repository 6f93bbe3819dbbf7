"""Reliability and scale of the turbo heads on small real models: empty inputs, degenerate
boxes and non-finite predictions, tiny and very large images, batches, class-agnostic masks,
determinism and host syncs."""

import copy

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import Backbone
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from turbo import ops
from turbo.benchmark.host_syncs import count_host_syncs
from turbo.benchmark.runner import run_prefix

from helpers import (
    assert_masks_predicted_in_boxes,
    assert_same_instances,
    assert_valid_model_outputs,
    assert_valid_roi_outputs,
    build,
    make_images,
    tiny_cfg,
)

HEADS = ["TurboROIHeads", "TurboCascadeROIHeads"]


def _features(model, inputs):
    prefix = run_prefix(model, inputs)
    return prefix.images, prefix.features, prefix.proposals


def _roi(model, images, features, proposals):
    with torch.no_grad():
        return model.roi_heads(images, features, proposals, None)[0]


def _without(instances, index):
    """``instances`` with image ``index`` given no rows at all."""
    out = list(instances)
    out[index] = instances[index][torch.zeros(len(instances[index]), dtype=torch.bool)]
    return out


# ------------------------------------------------------------------------------------------
# Empty images, empty batches
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("soft,iters", [(True, 1), (False, 1), (True, 0)])
def test_images_without_proposals(head, soft, iters):
    m = build(
        tiny_cfg(head, **{"MODEL.TURBO.SOFT_NMS.ENABLED": soft, "MODEL.TURBO.NUM_ITERS": iters})
    )
    images, features, proposals = _features(m, make_images(((64, 96), (80, 64), (72, 72))))
    full = _roi(m, images, features, proposals)
    assert all(len(x) > 0 for x in full)
    # the middle image has no proposal: it gets empty outputs, the others are unchanged
    mixed = _roi(m, images, features, _without(proposals, 1))
    assert len(mixed[1]) == 0 and mixed[1].image_size == full[1].image_size
    assert set(mixed[1].get_fields()) == set(full[1].get_fields())
    assert mixed[1].pred_masks.shape == (0, 1, 28, 28)
    for i in (0, 2):
        assert_same_instances(mixed[i], full[i])
    # no image has a proposal
    none = _roi(m, images, features, [p[:0] for p in proposals])
    for x, f in zip(none, full):
        assert len(x) == 0 and set(x.get_fields()) == set(f.get_fields())
        assert x.pred_masks.shape == (0, 1, 28, 28) and x.pred_boxes.tensor.shape == (0, 4)


@pytest.mark.parametrize("head", HEADS)
def test_turbo_cycle_on_mixed_empty_and_full_images(head):
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 2}))
    images, features, proposals = _features(m, make_images(((64, 96), (80, 64), (72, 72))))
    with torch.no_grad():
        det = m.roi_heads.detect(features, proposals)
        full = m.roi_heads.refine(features, det)
        mixed = m.roi_heads.refine(features, _without(_without(det, 0), 2))
        none = m.roi_heads.refine(features, [d[:0] for d in det])
    assert_same_instances(mixed[1], full[1])
    for x in (mixed[0], mixed[2]) + tuple(none):
        assert len(x) == 0 and x.pred_masks.shape == (0, 1, 28, 28)
        assert x.maskness.shape == (0,)


# ------------------------------------------------------------------------------------------
# Degenerate boxes, non-finite and constant predictions
# ------------------------------------------------------------------------------------------
_DEGENERATE = torch.tensor(
    [
        [10.0, 10.0, 10.0, 30.0],  # zero width
        [10.0, 10.0, 30.0, 10.0],  # zero height
        [0.0, 0.0, 0.0, 0.0],  # a point
        [30.0, 20.0, 20.0, 40.0],  # inverted
        [300.0, 200.0, 360.0, 230.0],  # wholly outside (right, below)
        [-50.0, 5.0, -10.0, 30.0],  # wholly outside (left)
        [-20.0, -20.0, 20.0, 20.0],  # partly outside
        [40.0, 50.0, 120.0, 90.0],  # partly outside (right, below)
        [5.0, 5.0, 40.0, 40.0],  # ordinary
    ]
)
_NO_PIXEL = 6  # the first six rows hold no pixel of the image
_SCORES = torch.tensor([0.5, float("nan"), float("inf"), float("-inf"), 0.3, 0.3, 0.9, 0.2, 0.6])


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("empty_mask", ["keep", "drop"])
def test_degenerate_boxes_in_the_turbo_cycle(head, empty_mask):
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 2, "MODEL.TURBO.EMPTY_MASK": empty_mask}))
    images, features, _ = _features(m, make_images(((64, 96), (80, 64))))
    inst = []
    for size in images.image_sizes:
        x = Instances(size)
        x.pred_boxes = Boxes(_DEGENERATE.clone())
        x.scores = _SCORES.clone()
        x.pred_classes = torch.arange(len(_DEGENERATE)) % 3
        inst.append(x)
    # every row returned, whatever its rescored score (negative: no score is at or below it)
    m.roi_heads.final_box_predictor().test_score_thresh = -1.0
    with torch.no_grad():
        out = m.roi_heads.refine(features, inst)
    p = m.roi_heads.turbo
    for o, size in zip(out, images.image_sizes):
        assert_valid_roi_outputs(o)
        h, w = size
        keys = [tuple(b.tolist()) for b in o.pred_boxes.tensor]
        row = {k: i for i, k in enumerate(keys)}
        no_pixel = {tuple(b.tolist()) for b in _DEGENERATE[:_NO_PIXEL]}
        if empty_mask == "drop":
            assert not (set(row) & no_pixel) and 0 < len(o) <= len(_DEGENERATE) - _NO_PIXEL
        else:
            # rows without a pixel keep their box; the others are refined into the image
            assert len(o) == len(_DEGENERATE) and no_pixel <= set(row)
            refined = o.pred_boxes.tensor[[k not in no_pixel for k in keys]]
            if p.box_fusion == 0:
                assert torch.all(refined[:, :2] >= 0) and torch.all(refined[:, 2] <= w)
                assert torch.all(refined[:, 3] <= h)
            # NaN and -inf scores count as 0, +inf as 1
            i = [row[tuple(_DEGENERATE[k].tolist())] for k in (1, 2, 3)]
            assert o.scores[i[0]] == 0 and o.scores[i[2]] == 0
            torch.testing.assert_close(
                o.scores[i[1]], 1 - p.maskness_weight + p.maskness_weight * o.maskness[i[1]]
            )
        assert torch.all(o.scores <= 1)
    assert_masks_predicted_in_boxes(m.roi_heads, features, out)


def _patch(model, what):
    rh = model.roi_heads
    mask = rh.mask_head.predictor
    cls = [
        p.cls_score
        for p in (
            rh.box_predictor if isinstance(rh.box_predictor, nn.ModuleList) else [rh.box_predictor]
        )
    ]
    with torch.no_grad():
        if what == "mask_nan":
            mask.bias.fill_(float("nan"))
        elif what == "mask_inf":
            mask.bias.fill_(float("inf"))
        elif what == "mask_neg_inf":
            mask.bias.fill_(float("-inf"))
        elif what == "mask_weight_inf":  # inf * 0 and inf - inf: NaN logits
            mask.weight.fill_(float("inf"))
        elif what == "mask_constant":
            mask.weight.zero_()
            mask.bias.fill_(0.3)
        elif what == "cls_nan":
            for c in cls:
                c.bias.fill_(float("nan"))
        elif what == "cls_equal":
            for c in cls:
                c.weight.zero_()
                c.bias.zero_()
        else:
            raise AssertionError(what)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize(
    "what",
    [
        "mask_nan",
        "mask_inf",
        "mask_neg_inf",
        "mask_weight_inf",
        "mask_constant",
        "cls_nan",
        "cls_equal",
    ],
)
def test_nonfinite_and_constant_predictions(head, what):
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 2}))
    _patch(m, what)
    p = m.roi_heads.turbo
    images, features, proposals = _features(m, make_images())
    with torch.no_grad():
        det = m.roi_heads.detect(features, proposals)
    out = _roi(m, images, features, proposals)
    for o, d in zip(out, det):
        assert_valid_roi_outputs(o)
        if what == "cls_nan":  # NaN class scores: no detection survives, as upstream
            assert len(d) == 0 and len(o) == 0
            continue
        # the rows whose rescored score stays above the threshold are returned
        thresh = m.roi_heads.final_box_predictor().test_score_thresh
        assert len(d) > 0 and len(o) <= len(d) and torch.all(o.scores > thresh)
        det_scores = torch.nan_to_num(d.scores, nan=0.0)
        if what in ("mask_nan", "mask_neg_inf", "mask_weight_inf"):
            # a NaN mask is an empty mask: Maskness 0, the detector's box is kept
            assert torch.all(o.maskness == 0)
            expect = det_scores * (1 - p.maskness_weight)
            kept = expect > thresh  # none for a cascade: Maskness weight 1 makes every score 0
            assert {tuple(b.tolist()) for b in o.pred_boxes.tensor} == {
                tuple(b.tolist()) for b in d.pred_boxes.tensor[kept]
            }
            torch.testing.assert_close(o.scores, expect[kept].sort(descending=True).values)
        elif what == "mask_inf":  # all-one masks: Maskness 1, scores untouched
            assert torch.all(o.maskness == 1)
            torch.testing.assert_close(o.scores, det_scores.sort(descending=True).values)
        elif what == "mask_constant":
            assert torch.all(o.maskness == o.maskness[0])
    if what == "cls_equal":  # ties everywhere: still reproducible
        again = _roi(m, images, features, proposals)
        for a, b in zip(out, again):
            assert_same_instances(a, b)
    # through the whole model: the pasted masks are booleans of image size
    with torch.no_grad():
        res = m(make_images())
    for r, x in zip(res, make_images()):
        inst = r["instances"]
        assert inst.pred_masks.shape == (len(inst), x["height"], x["width"])
        assert inst.pred_masks.dtype == torch.bool and torch.isfinite(inst.scores).all()


# ------------------------------------------------------------------------------------------
# Tiny and very large images, big batches
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_tiny_images(head):
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 2}))
    g = torch.Generator().manual_seed(0)
    inputs = [
        {"image": torch.rand(3, h, w, generator=g) * 255, "height": h, "width": w}
        for h, w in ((16, 16), (5, 7), (1, 1))
    ]
    with torch.no_grad():
        out = m(copy.deepcopy(inputs))
    assert_valid_model_outputs(out, inputs)
    assert len(out[0]["instances"]) > 0


class _PoolFPN(Backbone):
    """A test backbone cheap enough for a 4000 x 4000 input: ``p2`` is a 1x1 convolution of
    the 4x average-pooled image, ``p3``..``p6`` are further 2x average poolings."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, 1)
        self._out_features = [f"p{k}" for k in range(2, 7)]
        self._out_feature_strides = {f"p{k}": 2**k for k in range(2, 7)}
        self._out_feature_channels = dict.fromkeys(self._out_features, channels)

    @property
    def size_divisibility(self):
        return 32

    def forward(self, x):
        y = self.proj(F.avg_pool2d(x, 4))
        out = {"p2": y}
        for k in range(3, 7):
            y = F.avg_pool2d(y, 2)
            out[f"p{k}"] = y
        return out


if "build_turbo_test_pool_fpn" not in BACKBONE_REGISTRY:

    @BACKBONE_REGISTRY.register()
    def build_turbo_test_pool_fpn(cfg, input_shape):
        return _PoolFPN(cfg.MODEL.FPN.OUT_CHANNELS)


@pytest.mark.parametrize("head", HEADS)
def test_very_large_image(head):
    """A 4000 x 4000 image through the whole model (pasted masks included). The turbo cost
    does not grow with the image; a ResNet on 16 Mpixels would dominate the run, hence the
    pooling backbone."""
    size = 4000
    over = {
        "MODEL.BACKBONE.NAME": "build_turbo_test_pool_fpn",
        "MODEL.FPN.OUT_CHANNELS": 8,
        "INPUT.MAX_SIZE_TEST": size,
        "TEST.DETECTIONS_PER_IMAGE": 8,
        "MODEL.ANCHOR_GENERATOR.SIZES": [[256], [512], [1024], [2048], [4096]],
    }
    m0 = build(tiny_cfg(head, **{**over, "MODEL.TURBO.NUM_ITERS": 0}))
    m1 = build(tiny_cfg(head, **over), state_dict=m0.state_dict())
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, size // 100, size // 100, generator=g) * 255
    img = F.interpolate(img[None], size=(size, size), mode="nearest")[0]
    inputs = [{"image": img, "height": size, "width": size}]
    images, features, proposals = _features(m1, inputs)
    vanilla = _roi(m0, images, features, proposals)[0]
    out = _roi(m1, images, features, proposals)[0]
    assert len(out) == len(vanilla) > 0
    assert_valid_roi_outputs(out)
    # one cycle as defined, in the large frame
    p = m1.roi_heads.turbo
    probs = vanilla.pred_masks[:, 0]
    mb, _ = ops.mask_boxes(probs, vanilla.pred_boxes.tensor, (size, size), p.box_thresh)
    boxes = p.box_fusion * vanilla.pred_boxes.tensor + (1 - p.box_fusion) * mb
    scores = vanilla.scores * (
        1 - p.maskness_weight + p.maskness_weight * ops.maskness(probs, p.maskness_thresh)
    )
    order = torch.sort(scores, descending=True, stable=True).indices
    torch.testing.assert_close(out.pred_boxes.tensor, boxes[order])
    torch.testing.assert_close(out.scores, scores[order])
    assert (out.pred_boxes.tensor[:, 2:] - out.pred_boxes.tensor[:, :2]).max() > 100
    assert_masks_predicted_in_boxes(m1.roi_heads, features, [out])
    with torch.no_grad():
        res = m1(inputs)
    assert_valid_model_outputs(res, inputs)


@pytest.mark.parametrize("topk", [0, 2])
@pytest.mark.parametrize("head", HEADS)
def test_batch_equals_images_alone(head, topk):
    """Six images of different sizes in one batch: each image's ROI-head outputs equal those
    of the image alone. (The ROI heads are compared on the same features: a CNN backbone on
    a zero-padded batch legitimately differs in the last bits from the image alone.)"""
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 2, "MODEL.TURBO.REPREDICT_TOPK": topk}))
    sizes = ((100, 128), (128, 97), (112, 112), (97, 101), (64, 200), (120, 99))
    images, features, proposals = _features(m, make_images(sizes))
    batch = _roi(m, images, features, proposals)
    assert len(batch) == 6 and all(len(x) > 0 for x in batch)
    for i, b in enumerate(batch):
        one = ImageList(images.tensor[i : i + 1], [images.image_sizes[i]])
        alone = _roi(m, one, {k: v[i : i + 1] for k, v in features.items()}, [proposals[i]])[0]
        # exact with every mask re-predicted; a subset re-prediction batches rows differently
        assert_same_instances(b, alone, exact=topk == 0)


# ------------------------------------------------------------------------------------------
# Mask heads
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_class_agnostic_masks(head):
    m = build(
        tiny_cfg(
            head, **{"MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": True, "MODEL.TURBO.NUM_ITERS": 2}
        )
    )
    assert m.roi_heads.mask_head.predictor.out_channels == 1
    images, features, proposals = _features(m, make_images())
    out = _roi(m, images, features, proposals)
    assert sum(len(o) for o in out) > 0
    assert len({int(c) for o in out for c in o.pred_classes}) > 1
    for o in out:
        assert_valid_roi_outputs(o)
    assert_masks_predicted_in_boxes(m.roi_heads, features, out)
    with torch.no_grad():
        res = m(make_images())
    assert_valid_model_outputs(res, make_images())


# ------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("topk", [0, 2])
@pytest.mark.parametrize("head", HEADS)
def test_deterministic(head, topk):
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 2, "MODEL.TURBO.REPREDICT_TOPK": topk}))
    with torch.no_grad():
        a = m(make_images())
        b = m(make_images())
    assert sum(len(x["instances"]) for x in a) > 0
    for ra, rb in zip(a, b):
        assert_same_instances(ra["instances"], rb["instances"])


# ------------------------------------------------------------------------------------------
# Host syncs
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_turbo_cycles_make_no_host_sync(head):
    """Every mask re-predicted, or the top k (empty masks kept): between the detection stage
    and the output, the turbo code makes the host wait for the device once per image, to read
    which detections score above the threshold (as Detectron2's ``fast_rcnn_inference`` does
    for its own); the cycles themselves never. The score gate reads how many rows it keeps,
    once per batch, before the first mask pass. Detectron2's mask pooler does (it groups boxes
    by FPN level with ``nonzero``): not counted here."""
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 3}))
    images, features, proposals = _features(m, make_images())
    rh = m.roi_heads
    with torch.no_grad():
        det = rh.detect(features, proposals)
        for topk in (0, 2):
            with (
                rh.turbo_params(repredict_topk=topk, repredict_min_score=0.0),
                count_host_syncs(rh) as syncs,
            ):
                out = rh.refine(features, det)
            assert sum(len(o) for o in out) > 0
            assert syncs == ["aten::nonzero"] * len(images)
            with (
                rh.turbo_params(repredict_topk=topk, repredict_min_score=0.01),
                count_host_syncs(rh) as gated,
            ):
                rh.refine(features, det)
            # the gate's read first (before any mask-head pass), then the same as without it
            assert len(gated) == len(syncs) + 1 and gated[1:] == syncs, gated

        # the counter does see syncs: dropping empty masks selects rows by value
        with rh.turbo_params(empty_mask="drop"), count_host_syncs(rh) as syncs:
            rh.refine(features, det)
    assert "aten::nonzero" in syncs
