"""TurboROIHeads / TurboCascadeROIHeads against their Detectron2 parents, on real models."""

import collections
import copy

import pytest
import torch
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from turbo import SoftNMSParams, TurboParams, ops
from turbo.benchmark.host_syncs import count_host_syncs
from turbo.benchmark.runner import run_heads, run_prefix
from turbo.heads import TurboCascadeROIHeads, TurboROIHeads
from turbo.inference import soft_nms_detections

from helpers import (
    MASK_HEAD_TOL,
    assert_mask_head_is_upstreams,
    assert_masks_predicted_in_boxes,
    build,
    make_images,
    tiny_cfg,
)

HEADS = [("TurboROIHeads", "StandardROIHeads"), ("TurboCascadeROIHeads", "CascadeROIHeads")]
FIELDS = ("pred_boxes", "scores", "pred_classes", "pred_masks")


def _field(x, name):
    v = x.get(name)
    return v.tensor if isinstance(v, Boxes) else v


def _run_heads(model, inputs):
    """Backbone, RPN and ROI heads without postprocessing: outputs in the resized input frame,
    plus the features, so a test can call the mask head again."""
    prefix = run_prefix(model, inputs)
    return run_heads(model, prefix), prefix.features, prefix.proposals, prefix.images


def test_registered():
    assert ROI_HEADS_REGISTRY.get("TurboROIHeads") is TurboROIHeads
    assert ROI_HEADS_REGISTRY.get("TurboCascadeROIHeads") is TurboCascadeROIHeads


@pytest.mark.parametrize("turbo_head,parent", HEADS)
def test_num_iters_0_without_soft_nms_is_upstream(turbo_head, parent, images):
    base = build(tiny_cfg(parent))
    turbo = build(
        tiny_cfg(turbo_head, **{"MODEL.TURBO.NUM_ITERS": 0, "MODEL.TURBO.SOFT_NMS.ENABLED": False}),
        state_dict=base.state_dict(),
    )
    with torch.no_grad():
        a = base(copy.deepcopy(images))
        b = turbo(copy.deepcopy(images))
    assert sum(len(x["instances"]) for x in a) > 0
    for ra, rb in zip(a, b):
        ia, ib = ra["instances"], rb["instances"]
        assert set(ia.get_fields()) == set(ib.get_fields())
        for f in FIELDS:
            assert torch.equal(_field(ia, f), _field(ib, f)), f


@pytest.mark.parametrize("turbo_head,parent", HEADS)
def test_training_is_untouched(turbo_head, parent):
    inputs = make_images()
    for x in inputs:
        inst = Instances((x["height"], x["width"]))
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 30.0], [20.0, 10.0, 60.0, 50.0]]))
        inst.gt_classes = torch.tensor([0, 2])
        m = torch.zeros(2, x["height"], x["width"], dtype=torch.bool)
        m[0, 8:28, 6:38] = True
        m[1, 12:48, 22:58] = True
        inst.gt_masks = BitMasks(m)
        x["instances"] = inst
    cfg_p, cfg_t = tiny_cfg(parent), tiny_cfg(turbo_head)
    for cfg in (cfg_p, cfg_t):
        cfg.MODEL.RESNETS.NORM = "BN"  # non-frozen layers everywhere, so every gradient counts
    base = build(cfg_p)
    turbo = build(cfg_t, state_dict=base.state_dict())
    results = []
    for model in (base, turbo):
        model.train()
        torch.manual_seed(123)
        with EventStorage():
            losses = model(copy.deepcopy(inputs))
        total = sum(losses.values())
        model.zero_grad()
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((losses, grads))
    (la, ga), (lb, gb) = results
    assert set(la) == set(lb) and "loss_mask" in la
    for k in la:
        assert torch.equal(la[k], lb[k]), k
    assert set(ga) == set(gb) and len(ga) > 10
    for k in ga:
        assert torch.equal(ga[k], gb[k]), k


@pytest.mark.parametrize("head", ["TurboROIHeads", "TurboCascadeROIHeads"])
def test_turbo_cycle_matches_its_definition(head, images):
    """One cycle = boxes from the vanilla masks (ops.mask_boxes, fused), masks re-predicted in
    them, scores fused with the vanilla masks' Maskness."""
    cfg0 = tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 0})
    cfg1 = tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 1})
    m0 = build(cfg0)
    m1 = build(cfg1, state_dict=m0.state_dict())
    vanilla, features, _, _ = _run_heads(m0, copy.deepcopy(images))
    turbo, _, _, _ = _run_heads(m1, copy.deepcopy(images))
    p = m1.roi_heads.turbo
    assert p == TurboParams.from_cfg(cfg1).resolved(type(m1.roi_heads).recipe())
    assert sum(len(v) for v in vanilla) > 5
    for v, t in zip(vanilla, turbo):
        assert len(v) == len(t)
        probs = v.pred_masks[:, 0]
        mb, found = ops.mask_boxes(probs, v.pred_boxes.tensor, v.image_size, p.box_thresh)
        boxes = p.box_fusion * v.pred_boxes.tensor + (1 - p.box_fusion) * mb
        m = ops.maskness(probs, p.maskness_thresh)
        scores = v.scores * (1 - p.maskness_weight + p.maskness_weight * m)
        order = torch.sort(scores, descending=True, stable=True).indices
        torch.testing.assert_close(t.pred_boxes.tensor, boxes[order])
        # the vanilla masks are Detectron2's, Turbo's are its mask-head path's
        torch.testing.assert_close(t.scores, scores[order], **MASK_HEAD_TOL)
        torch.testing.assert_close(t.maskness, m[order], **MASK_HEAD_TOL)
        assert torch.equal(t.pred_classes, v.pred_classes[order])
    # every output mask is the mask head's prediction in the output box
    assert_masks_predicted_in_boxes(m1.roi_heads, features, turbo)
    assert_mask_head_is_upstreams(m1.roi_heads, features, turbo)


def test_more_cycles_and_maskness_source(images):
    m = build(
        tiny_cfg(
            "TurboROIHeads", **{"MODEL.TURBO.NUM_ITERS": 3, "MODEL.TURBO.MASKNESS_SOURCE": "both"}
        )
    )
    out, features, _, _ = _run_heads(m, copy.deepcopy(images))
    assert_masks_predicted_in_boxes(m.roi_heads, features, out)
    assert_mask_head_is_upstreams(m.roi_heads, features, out)
    for t in out:
        # "both": the Maskness returned is that of the output masks themselves
        torch.testing.assert_close(t.maskness, ops.maskness(t.pred_masks, 0.35))
        assert torch.all(t.scores[:-1] >= t.scores[1:])


@pytest.mark.parametrize("mode", ["keep", "drop"])
def test_empty_masks(mode, images):
    # no pasted probability reaches 1.0: every mask is empty for refinement
    m = build(
        tiny_cfg("TurboROIHeads", **{"MODEL.TURBO.BOX_THRESH": 1.0, "MODEL.TURBO.EMPTY_MASK": mode})
    )
    ref = build(
        tiny_cfg("TurboROIHeads", **{"MODEL.TURBO.NUM_ITERS": 0}), state_dict=m.state_dict()
    )
    out, _, _, _ = _run_heads(m, copy.deepcopy(images))
    base, _, _, _ = _run_heads(ref, copy.deepcopy(images))
    for o, b in zip(out, base):
        if mode == "drop":
            assert len(o) == 0 and o.pred_masks.shape[1:] == (1, 28, 28)
        else:
            assert len(o) == len(b) > 0
            assert {tuple(x.tolist()) for x in o.pred_boxes.tensor} == {
                tuple(x.tolist()) for x in b.pred_boxes.tensor
            }


@pytest.mark.parametrize("head", ["TurboROIHeads", "TurboCascadeROIHeads"])
@pytest.mark.parametrize("soft", [True, False])
def test_zero_detections(head, soft):
    m = build(
        tiny_cfg(
            head, **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 1.0, "MODEL.TURBO.SOFT_NMS.ENABLED": soft}
        )
    )
    with torch.no_grad():
        out = m(make_images())
    for r in out:
        inst = r["instances"]
        assert len(inst) == 0
        assert inst.pred_masks.shape[1:] == (r["instances"].image_size)


def _box_head_outputs(sizes=(40, 0, 25), shapes=((50, 60), (70, 40), (30, 30))):
    """Per image (n, 3 * 4) class-specific boxes, XYXY in the image, and (n, 3 + 1) class
    probabilities (background last), random but fixed."""
    g = torch.Generator().manual_seed(0)
    boxes, scores = [], []
    for n, (h, w) in zip(sizes, shapes):
        xy = torch.rand(n, 3, 2, generator=g) * torch.tensor([w, h]) * 0.7
        wh = torch.rand(n, 3, 2, generator=g) * 20 + 1
        boxes.append(torch.cat([xy, xy + wh], -1).reshape(n, 12))
        scores.append(torch.softmax(torch.randn(n, 4, generator=g) * 2, -1))
    return boxes, scores, list(shapes)


@pytest.mark.parametrize("non_finite", [False, True])
def test_soft_nms_hard_equals_fast_rcnn_inference(non_finite):
    """Hard suppression gives what Detectron2's fast_rcnn_inference gives, rows with a
    non-finite box or score dropped as it drops them."""
    boxes, scores, shapes = _box_head_outputs()
    if non_finite:
        boxes[0][3, 5] = float("nan")
        boxes[2][0, 0] = float("inf")
        scores[0][7, 1] = float("nan")
    ref, _ = fast_rcnn_inference(boxes, scores, shapes, 0.05, 0.5, 10)
    params = SoftNMSParams(method="hard", iou_thresh=0.5, min_score=0.0)
    got = soft_nms_detections(boxes, scores, shapes, 0.05, 10, params)
    for r, s in zip(ref, got):
        assert r.image_size == s.image_size and len(r) == len(s)
        torch.testing.assert_close(s.pred_boxes.tensor, r.pred_boxes.tensor)
        torch.testing.assert_close(s.scores, r.scores)
        assert torch.equal(s.pred_classes, r.pred_classes)


def test_soft_nms_detection_host_syncs():
    """The Soft-NMS detection stage of one image waits for the device only where a size
    depends on values: the candidates above the threshold (with Detectron2's finiteness
    check of their boxes), the categories and their widest, the suppression's stopping
    check every 8 steps, and the results kept. The counter counts each wait once."""
    boxes, scores, shapes = _box_head_outputs(sizes=(300,), shapes=((80, 80),))
    for thresh in (0.0, 0.05):
        with count_host_syncs(None) as syncs:
            out = soft_nms_detections(boxes, scores, shapes, thresh, 100, SoftNMSParams())
        assert len(out[0]) > 0
        counts = collections.Counter(syncs)
        width = int((scores[0][:, :-1] > thresh).sum(dim=0).max())
        checks = counts.pop("aten::is_nonzero") - 1  # Detectron2's Boxes.clip asserts finiteness
        assert 1 <= checks <= width // 8 + 1, syncs
        # candidates (as_tuple), the candidates kept by min_score, the picks, the top k
        assert counts == {
            "aten::nonzero_numpy": 1,
            "aten::nonzero": 3,
            "aten::_unique2": 1,
            "aten::item": 1,
        }, syncs
    with count_host_syncs(None) as syncs:
        bool(torch.ones(3).any())
    assert syncs == ["aten::is_nonzero"]


def test_soft_nms_detection_decays_and_caps():
    boxes = [torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]], dtype=torch.float)]
    scores = [torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.3, 0.0]])]  # bg last
    got = soft_nms_detections(boxes, scores, [(50, 50)], 0.01, 100, SoftNMSParams())[0]
    iou = 90 / 110
    # class 1: 0.3 (apart) first, then 0.2, which decays its overlapping 0.1 neighbour
    expect = {(0, 0.9), (0, 0.8 * (1 - iou)), (0, 0.7), (1, 0.1 * (1 - iou)), (1, 0.2), (1, 0.3)}
    assert len(got) == 6
    assert {(c, round(s, 5)) for c, s in zip(got.pred_classes.tolist(), got.scores.tolist())} == {
        (c, round(s, 5)) for c, s in expect
    }
    assert torch.all(got.scores[:-1] >= got.scores[1:])
    # the score threshold wins over Soft-NMS's minimum: a decayed score below 0.05 is dropped
    # (0.1 decayed to 0.018), though SOFT_NMS.MIN_SCORE (0.001) would keep it
    kept = soft_nms_detections(boxes, scores, [(50, 50)], 0.05, 100, SoftNMSParams())[0]
    assert len(kept) == 5 and float(kept.scores.min()) >= 0.05
    capped = soft_nms_detections(boxes, scores, [(50, 50)], 0.05, 2, SoftNMSParams())[0]
    assert capped.scores.tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize("k", [1, 3])
def test_repredict_topk(k, images):
    """REPREDICT_TOPK k: each image's k highest-scoring detections get a second mask-head
    pass, exactly as with every mask re-predicted; the others take the refined box with
    their vanilla mask resampled into it, so every mask lies in its output box."""
    sd = build(tiny_cfg("TurboROIHeads")).state_dict()
    for key in sd:  # softer class scores (the randomised ones saturate at 1.0): varied scores
        if "cls_score" in key:
            sd[key] = sd[key] * 0.02
    m0 = build(tiny_cfg("TurboROIHeads", **{"MODEL.TURBO.NUM_ITERS": 0}), state_dict=sd)
    full = build(tiny_cfg("TurboROIHeads"), state_dict=sd)
    gated = build(tiny_cfg("TurboROIHeads", **{"MODEL.TURBO.REPREDICT_TOPK": k}), state_dict=sd)
    assert gated.roi_heads.turbo.repredict_topk == k and full.roi_heads.turbo.repredict_topk == 0
    vanilla, _, _, _ = _run_heads(m0, copy.deepcopy(images))
    rf, _, _, _ = _run_heads(full, copy.deepcopy(images))
    rg, _, _, _ = _run_heads(gated, copy.deepcopy(images))
    p = gated.roi_heads.turbo
    n_top = n_rest = 0
    for v, f, g in zip(vanilla, rf, rg):
        probs = v.pred_masks[:, 0]
        m = ops.maskness(probs, p.maskness_thresh)
        order = torch.sort(
            v.scores * (1 - p.maskness_weight + p.maskness_weight * m), descending=True, stable=True
        ).indices
        # the detector's top k by score (vanilla is sorted by score), in output order
        top = (torch.arange(len(v)) < k)[order]
        n_top, n_rest = n_top + int(top.sum()), n_rest + int((~top).sum())
        torch.testing.assert_close(g.scores, f.scores)  # rescoring reads the vanilla masks
        torch.testing.assert_close(g.pred_boxes.tensor, f.pred_boxes.tensor)
        # the same rows, in a batch of other size (channels-last convolutions round by it)
        torch.testing.assert_close(g.pred_masks[top], f.pred_masks[top], **MASK_HEAD_TOL)
        boxes, _ = ops.mask_boxes(probs, v.pred_boxes.tensor, v.image_size, p.box_thresh)
        resampled = ops.resample_masks(probs, v.pred_boxes.tensor, boxes)
        torch.testing.assert_close(g.pred_masks[~top, 0], resampled[order][~top], **MASK_HEAD_TOL)
    assert n_top > 0 and n_rest > 0
