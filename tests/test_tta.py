"""Test-time augmentation with the turbo heads: Detectron2's ``GeneralizedRCNNWithTTA`` (no
cycles, with a warning) and ``turbo.tta.TurboRCNNWithTTA`` (cycles on the merged detections)."""

import collections
import copy

import detectron2.utils.logger as d2_logger
import pytest
import torch
from detectron2.modeling import GeneralizedRCNNWithTTA

import turbo.heads
import turbo.tta
from turbo.tta import TurboRCNNWithTTA

from helpers import (
    assert_pasted_masks_inside_boxes,
    assert_same_instances,
    assert_valid_model_outputs,
    build,
    make_images,
    tiny_cfg,
)

HEADS = ["TurboROIHeads", "TurboCascadeROIHeads"]


# ------------------------------------------------------------------------------------------
def _tta_cfg(head, **overrides):
    cfg = tiny_cfg(head, **overrides)
    cfg.TEST.AUG.ENABLED = True
    cfg.TEST.AUG.MIN_SIZES = (48, 64, 80)
    cfg.TEST.AUG.MAX_SIZE = 160
    cfg.TEST.AUG.FLIP = True
    return cfg


@pytest.mark.parametrize("head", HEADS)
def test_test_time_augmentation(head, monkeypatch, caplog):
    """Detectron2's TTA with the turbo heads: Soft-NMS detection in each augmentation, plain
    masks averaged over the augmentations on the merged boxes, no turbo cycle."""
    cfg = _tta_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 2})
    m = build(cfg)
    calls = {"soft_nms": 0, "turbo": 0}
    soft_nms = turbo.heads.soft_nms_detections

    def counting_soft_nms(*args, **kwargs):
        calls["soft_nms"] += 1
        return soft_nms(*args, **kwargs)

    def no_cycles(*args, **kwargs):
        calls["turbo"] += 1
        raise AssertionError("turbo cycles under TTA")

    monkeypatch.setattr(turbo.heads, "soft_nms_detections", counting_soft_nms)
    monkeypatch.setattr(m.roi_heads, "refine", no_cycles)
    inputs = make_images()
    for x in inputs:
        x["image"] = x["image"].to(torch.uint8)
    monkeypatch.setattr(d2_logger, "_LOG_COUNTER", collections.Counter())  # log_first_n anew
    with torch.no_grad(), caplog.at_level("WARNING", logger="turbo.heads"):
        out = GeneralizedRCNNWithTTA(cfg, m, batch_size=3)(copy.deepcopy(inputs))
    # not silent: the user is told the cycles are not applied
    assert "turbo cycles and Maskness rescoring are not applied under TTA" in caplog.text
    # 3 sizes x 2 flips = 6 augmented images per input, in batches of 3
    assert calls == {"soft_nms": 2 * len(inputs), "turbo": 0}
    assert m.roi_heads.mask_on  # TTA restored it
    assert_valid_model_outputs(out, inputs)
    assert all(len(r["instances"]) > 0 for r in out)
    for r in out:
        assert_pasted_masks_inside_boxes(
            r["instances"].pred_masks, r["instances"].pred_boxes.tensor
        )

    # NUM_ITERS does not matter under TTA: the same outputs as without cycles
    monkeypatch.undo()
    m0 = build(_tta_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 0}), state_dict=m.state_dict())
    with torch.no_grad():
        ref = GeneralizedRCNNWithTTA(cfg, m0, batch_size=3)(copy.deepcopy(inputs))
    for a, b in zip(out, ref):
        assert_same_instances(a["instances"], b["instances"])


@pytest.mark.parametrize("head", HEADS)
def test_turbo_tta_runs_the_cycles(head, monkeypatch, caplog):
    """turbo.tta.TurboRCNNWithTTA: NUM_ITERS 0 is Detectron2's TTA exactly; with cycles, the
    merged boxes are refined from the augmentation-averaged masks, and masks re-averaged."""
    inputs = make_images()
    for x in inputs:
        x["image"] = x["image"].to(torch.uint8)
    cfg0 = _tta_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 0})
    m0 = build(cfg0)
    with torch.no_grad():
        ref = GeneralizedRCNNWithTTA(cfg0, m0, batch_size=3)(copy.deepcopy(inputs))
        same = TurboRCNNWithTTA(cfg0, m0, batch_size=3)(copy.deepcopy(inputs))
    for a, b in zip(ref, same):
        assert_same_instances(a["instances"], b["instances"])

    cfg = _tta_cfg(head, **{"MODEL.TURBO.NUM_ITERS": 1})
    m1 = build(cfg, state_dict=m0.state_dict())
    calls = {"cycles": 0}
    refine = type(m1.roi_heads).refine

    def counting(*args, **kwargs):
        calls["cycles"] += 1
        return refine(*args, **kwargs)

    monkeypatch.setattr(type(m1.roi_heads), "refine", counting)
    with torch.no_grad(), caplog.at_level("WARNING", logger="turbo.heads"):
        out = TurboRCNNWithTTA(cfg, m1, batch_size=3)(copy.deepcopy(inputs))
    assert "not applied under TTA" not in caplog.text
    assert calls["cycles"] == len(inputs)
    assert_valid_model_outputs(out, inputs)
    for r in out:
        assert_pasted_masks_inside_boxes(
            r["instances"].pred_masks, r["instances"].pred_boxes.tensor
        )
    moved = 0
    for a, b in zip(ref, out):
        ia, ib = a["instances"], b["instances"]
        assert len(ia) == len(ib) > 0 and ib.has("maskness")  # EMPTY_MASK keep: same count
        assert torch.all(ib.scores[:-1] >= ib.scores[1:])
        ka = {tuple(x) for x in ia.pred_boxes.tensor.round(decimals=3).tolist()}
        kb = {tuple(x) for x in ib.pred_boxes.tensor.round(decimals=3).tolist()}
        moved += len(kb - ka)
    assert moved > 0  # the cycle refined merged boxes
