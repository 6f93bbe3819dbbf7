"""Turbo wherever the upstream heads run: eval with autograd on (the outputs of autograd off,
and gradients where upstream's flow), and mixed precision (``torch.autocast``, bfloat16 on
CPU) on the shipped models, as close to float32 as the upstream heads are. Every family is
also run with autograd on and under autocast in ``test_model_families.py``."""

import copy

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import pairwise_iou

from turbo.benchmark.reference_models import reference_model
from turbo.build import load_model
from turbo.config import IDENTITY_MAP
from turbo.datasets import register_synthetic_datasets

from helpers import assert_same_instances, build, make_images, tiny_cfg

HEADS = [("TurboROIHeads", "StandardROIHeads"), ("TurboCascadeROIHeads", "CascadeROIHeads")]
# one opt-in setting at a time, beside the published cycle and two cycles
OPTIONS = {
    "published": {},
    "two_cycles": {"MODEL.TURBO.NUM_ITERS": 2},
    "topk": {"MODEL.TURBO.REPREDICT_TOPK": 3},
    "score_map": {"MODEL.TURBO.SCORE_MAP": [[0.0, 0.0], [0.3, 0.5], [1.0, 1.0]]},
    "maskness_both": {"MODEL.TURBO.MASKNESS_SOURCE": "both"},
    "half_interior": {"MODEL.TURBO.MASK_EDGE": "half_interior"},
    "drop_empty": {"MODEL.TURBO.EMPTY_MASK": "drop"},
    "gaussian": {"MODEL.TURBO.SOFT_NMS.METHOD": "gaussian"},
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("head", [h for h, _ in HEADS])
def test_eval_with_autograd_on_equals_autograd_off(head, option):
    model = build(tiny_cfg(head, **OPTIONS[option]))
    images = make_images()
    with torch.no_grad():
        off = model(copy.deepcopy(images))
    on = model(copy.deepcopy(images))  # autograd on, as a plain ``model(inputs)`` call is
    assert sum(len(r["instances"]) for r in off) > 0
    for a, b in zip(off, on):
        assert_same_instances(a["instances"], b["instances"])


def _grads(model, images):
    """Gradients of the ROI heads' scores and mask probabilities (resized input frame, before
    pasting) with respect to the box classifier's and the mask predictor's weights."""
    model.zero_grad()
    inputs = model.preprocess_image(copy.deepcopy(images))
    features = model.backbone(inputs.tensor)
    proposals, _ = model.proposal_generator(inputs, features, None)
    results, _ = model.roi_heads(inputs, features, proposals, None)
    heads = model.roi_heads
    cascade = isinstance(heads, CascadeROIHeads)
    predictor = heads.box_predictor[-1] if cascade else heads.box_predictor
    weights = {"cls_score": predictor.cls_score.weight, "mask": heads.mask_head.predictor.weight}
    scores = torch.cat([r.scores for r in results]).sum()
    masks = torch.cat([r.pred_masks for r in results]).sum()
    return {
        ("scores", "cls_score"): torch.autograd.grad(
            scores, weights["cls_score"], retain_graph=True
        )[0],
        ("masks", "mask"): torch.autograd.grad(masks, weights["mask"])[0],
    }


@pytest.mark.parametrize("head,parent", HEADS)
def test_gradients_flow_where_upstream_ones_do(head, parent):
    """The scores carry the box classifier's gradient and the masks the mask head's, with
    Turbo on as with the upstream heads (the refined boxes are whole pixels: their gradient is
    zero almost everywhere, so the re-predicted masks carry the mask head's gradient only)."""
    up = build(tiny_cfg(parent))
    tb = build(tiny_cfg(head), state_dict=up.state_dict())
    images = make_images()
    g_up, g_tb = _grads(up, images), _grads(tb, images)
    for key in g_up:
        assert g_up[key].abs().sum() > 0, key
        assert torch.isfinite(g_tb[key]).all() and g_tb[key].abs().sum() > 0, key


def _shipped_inputs(dataset: str, n: int):
    register_synthetic_datasets()
    return [
        {
            "image": torch.as_tensor(
                read_image(d["file_name"], format="BGR").transpose(2, 0, 1).copy()
            ),
            "height": d["height"],
            "width": d["width"],
        }
        for d in DatasetCatalog.get(dataset)[:n]
    ]


def bfloat16_agreement(f32, bf16, min_score: float = 0.3) -> dict:
    """How close the detections of a bfloat16 run are to those of float32 on the same inputs.

    Each float32 detection scoring at least ``min_score`` is matched to the bfloat16 detection
    of its class overlapping it at box IoU >= 0.5 whose score is nearest. Returns the number
    matched and unmatched, the medians of box IoU, score difference and mask IoU (pasted
    masks) of the matches, and the share of matches within box IoU 0.9, score 0.05 and mask
    IoU 0.9 ("close")."""
    ious, diffs, mask_ious, unmatched = [], [], [], 0
    for ra, rb in zip(f32, bf16):
        a, b = ra["instances"], rb["instances"]
        a = a[a.scores >= min_score]
        if len(a) == 0:
            continue
        iou = pairwise_iou(a.pred_boxes, b.pred_boxes)
        candidate = (a.pred_classes[:, None] == b.pred_classes[None]) & (iou >= 0.5)
        diff = (a.scores[:, None] - b.scores[None].float()).abs()
        diff = torch.where(candidate, diff, torch.full_like(diff, float("inf")))
        d, j = diff.min(dim=1)
        ok = torch.isfinite(d)
        unmatched += int((~ok).sum())
        ma, mb = a.pred_masks[ok].flatten(1).float(), b.pred_masks[j[ok]].flatten(1).float()
        inter = (ma * mb).sum(dim=1)
        mask_ious.append(inter / (ma.sum(dim=1) + mb.sum(dim=1) - inter).clamp(min=1))
        ious.append(iou[ok.nonzero()[:, 0], j[ok]])
        diffs.append(d[ok])
    iou, diff, mask_iou = torch.cat(ious), torch.cat(diffs), torch.cat(mask_ious)
    close = (iou >= 0.9) & (diff <= 0.05) & (mask_iou >= 0.9)
    return {
        "matched": len(iou),
        "unmatched": unmatched,
        "box_iou": float(iou.median()),
        "score_diff": float(diff.median()),
        "mask_iou": float(mask_iou.median()),
        "close": float(close.float().mean()),
    }


@pytest.mark.parametrize(
    "name,dataset",
    [("mask_rcnn", "shapes_val"), ("cascade", "shapes_val"), ("scenes_cascade", "scenes_val")],
)
def test_bfloat16_autocast_on_the_shipped_models(name, dataset):
    """bfloat16 autocast changes Turbo's detections no more than it changes the upstream
    heads': every confident float32 detection has a bfloat16 counterpart, as close in box,
    score and mask as upstream's are; scores and mask probabilities come back in the dtypes
    upstream returns. The score map is left out of the comparison: it stretches the score
    scale by its slope (up to about 1.5), and score differences with it; the mapped run is
    held to the dtypes and the range."""
    _, config, weights = reference_model(name)
    model = load_model(config, weights, "cpu")[1]
    inputs = _shipped_inputs(dataset, 3)
    heads = model.roi_heads
    got = {}
    for label, params in (
        ("upstream", {"num_iters": 0, "soft_nms": {"enabled": False}}),
        ("turbo", {"score_map": IDENTITY_MAP}),
        ("turbo, its score map", {}),
    ):
        with heads.turbo_params(**params), torch.no_grad():
            f32 = model(copy.deepcopy(inputs))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = model(copy.deepcopy(inputs))
        got[label] = (bfloat16_agreement(f32, bf16), bf16)
    up, tb = got["upstream"][0], got["turbo"][0]
    assert tb["matched"] > 10 and tb["unmatched"] == 0, tb
    assert tb["box_iou"] >= 0.97 and tb["score_diff"] <= 0.02 and tb["mask_iou"] >= 0.95, tb
    assert tb["close"] >= up["close"] - 0.05, (tb, up)
    assert heads.turbo.score_map != IDENTITY_MAP
    for a, b in zip(got["upstream"][1] * 2, got["turbo"][1] + got["turbo, its score map"][1]):
        ia, ib = a["instances"], b["instances"]
        assert ib.scores.dtype == ia.scores.dtype == torch.bfloat16
        assert ib.pred_masks.dtype == ia.pred_masks.dtype
        assert ib.pred_boxes.tensor.dtype == ia.pred_boxes.tensor.dtype
        assert float(ib.scores.min()) >= 0 and float(ib.scores.max()) <= 1
