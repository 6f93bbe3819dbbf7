"""Test helpers: small randomly initialised models of this repository's turbo base configs
(with non-trivial head weights), the published cycle's mechanisms, synthetic Detectron2 input
images, and assertions on outputs. Synthetic workloads, Detectron2's paste as the reference
of ``mask_boxes`` and the host-sync counter, which the benchmark uses too, live in
``turbo.benchmark``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from turbo.benchmark.variants import MECHANISM_KEYS, PUBLISHED
from turbo.build import get_turbo_cfg
from turbo.config import TurboParams

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# The reductions that make a turbo config's model small and fast on CPU.
_TINY = {
    "MODEL.DEVICE": "cpu",
    "MODEL.RESNETS.DEPTH": 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
    "MODEL.FPN.OUT_CHANNELS": 32,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[8], [16], [32], [64], [128]],
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 200,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 100,
    "MODEL.ROI_HEADS.NUM_CLASSES": 3,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 16,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 2,
    "TEST.DETECTIONS_PER_IMAGE": 40,
    "INPUT.MIN_SIZE_TEST": 64,
    "INPUT.MAX_SIZE_TEST": 128,
}


PUBLISHED_MECHANISMS = {"MODEL.TURBO." + k.upper(): getattr(PUBLISHED, k) for k in MECHANISM_KEYS}


def published_mechanisms(params: TurboParams) -> TurboParams:
    """``params`` with the published cycle's mechanisms
    (:data:`turbo.benchmark.variants.MECHANISM_KEYS` as in
    :data:`turbo.benchmark.variants.PUBLISHED`), its thresholds and cycle count kept."""
    return params.replace(**{k: getattr(PUBLISHED, k) for k in MECHANISM_KEYS})


def tiny_cfg(head: str = "TurboROIHeads", base: str = "", **overrides: Any):
    """A small Mask R-CNN (or cascade, for a head name containing "Cascade") yacs config on
    CPU, from ``base`` (a file under ``configs/``; default: the turbo base of the head), with
    the published cycle's mechanisms (:data:`PUBLISHED_MECHANISMS`: the head tests check the
    cycle against its definition; the package defaults' mechanisms are tested in
    ``turbo.inference`` terms and on the shipped models). ``overrides``: "KEY.PATH": value
    pairs applied last."""
    cfg = get_turbo_cfg()
    if not base:
        base = (
            "Base-Turbo-Cascade-RCNN-FPN.yaml" if "Cascade" in head else "Base-Turbo-RCNN-FPN.yaml"
        )
    cfg.merge_from_file(os.path.join(CONFIGS, base))
    items = {**_TINY, **PUBLISHED_MECHANISMS, "MODEL.ROI_HEADS.NAME": head, **overrides}
    for key, value in items.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def build(cfg, seed: int = 0, state_dict: Dict[str, Tensor] = None) -> nn.Module:
    """The config's model in eval mode, with ``state_dict`` or seeded random weights
    (:func:`randomize_heads`)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    else:
        randomize_heads(model, seed)
    return model.eval()


def randomize_heads(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give the box and mask predictors non-trivial weights, so that a randomly initialised
    model yields varied scores, boxes and masks (Detectron2 initialises them near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cls_score" in name or "mask_head.predictor" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.5))
            elif "bbox_pred" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return model


def make_images(
    sizes: Sequence[Tuple[int, int]] = ((64, 96), (80, 64)), seed: int = 0
) -> List[dict]:
    """Detectron2 inputs: CHW float images in [0, 255] (BGR), with a few bright blobs so that
    proposals differ between locations."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        img = torch.rand(3, h, w, generator=g) * 255
        for _ in range(3):
            y = torch.randint(0, max(h - 8, 1), (1,), generator=g)
            x = torch.randint(0, max(w - 8, 1), (1,), generator=g)
            img[:, y : y + 16, x : x + 20] = 255
        out.append({"image": img, "height": h, "width": w})
    return out


# ------------------------------------------------------------------------------------------
# Assertions on outputs
# ------------------------------------------------------------------------------------------
def _field(x: Instances, name: str) -> Tensor:
    v = x.get(name)
    return v.tensor if isinstance(v, Boxes) else v


def assert_same_instances(a: Instances, b: Instances, exact: bool = True) -> None:
    """Same image size, fields and rows; values equal (``exact``) or close (floats)."""
    assert a.image_size == b.image_size and len(a) == len(b)
    assert set(a.get_fields()) == set(b.get_fields())
    for f in a.get_fields():
        if exact or _field(a, f).dtype in (torch.bool, torch.long):
            assert torch.equal(_field(a, f), _field(b, f)), f
        else:
            torch.testing.assert_close(
                _field(a, f), _field(b, f), rtol=1e-4, atol=1e-4, msg=lambda m, f=f: f"{f}: {m}"
            )


def assert_valid_roi_outputs(
    inst: Instances, mask_size: int = 28, probabilities: bool = True
) -> None:
    """ROI-head outputs: finite fields, boxes (N, 4), scores in [0, 1] sorted (descending),
    masks (N, 1, M, M) probabilities in [0, 1] (with ``probabilities`` False, in [0, 2]: each
    divided by a level at least half its peak, ``mask_edge`` "half_interior"), Maskness in
    [0, 1]."""
    n = len(inst)
    b = inst.pred_boxes.tensor
    assert b.shape == (n, 4) and torch.isfinite(b).all()
    assert inst.scores.shape == (n,) and torch.isfinite(inst.scores).all()
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    assert torch.all((inst.scores >= 0) & (inst.scores <= 1))
    assert inst.pred_masks.shape == (n, 1, mask_size, mask_size)
    assert torch.isfinite(inst.pred_masks).all()
    top = 1.0 if probabilities else 2.0
    assert torch.all((inst.pred_masks >= 0) & (inst.pred_masks <= top))
    if inst.has("maskness"):
        assert torch.isfinite(inst.maskness).all()
        assert torch.all((inst.maskness >= 0) & (inst.maskness <= 1))


def assert_valid_model_outputs(outputs: List[dict], inputs: List[dict], masks: bool = True) -> None:
    """A model's postprocessed outputs: in the original image frame, boxes inside the image,
    finite scores, boolean image-sized masks."""
    for r, x in zip(outputs, inputs):
        inst = r["instances"]
        h, w = x["height"], x["width"]
        assert inst.image_size == (h, w)
        if masks:
            assert inst.pred_masks.shape == (len(inst), h, w)
            assert inst.pred_masks.dtype == torch.bool
        b = inst.pred_boxes.tensor
        assert torch.isfinite(b).all() and torch.isfinite(inst.scores).all()
        assert torch.all(b[:, :2] >= 0) and torch.all(b[:, 2] <= w) and torch.all(b[:, 3] <= h)
        assert torch.all(b[:, 2:] >= b[:, :2])


# Masks of Turbo's mask-head path (``turbo.mask_head``: channels-last memory, the selected class
# only) against Detectron2's ``forward_with_given_boxes``: the same probabilities up to float
# rounding, and what follows from them (Maskness, rescored scores) likewise.
MASK_HEAD_TOL = {"rtol": 1e-4, "atol": 1e-4}


def assert_masks_predicted_in_boxes(
    heads, features: Dict[str, Tensor], outputs: List[Instances]
) -> None:
    """Every output mask is the heads' mask prediction in its output box: ``predict_masks``,
    the mask head the cycles call (NaN probabilities counted as 0), which
    :func:`assert_mask_head_is_upstreams` holds to Detectron2's own."""
    again = _predicted_masks(heads, features, outputs)
    torch.testing.assert_close(torch.cat([o.pred_masks[:, 0] for o in outputs]), again)


def _predicted_masks(heads, features: Dict[str, Tensor], outputs: List[Instances]) -> Tensor:
    """(N, M, M) ``heads.predict_masks`` in the boxes of ``outputs``, rows in image order."""
    return heads.predict_masks(
        features,
        torch.cat([o.pred_boxes.tensor for o in outputs]),
        torch.cat([o.pred_classes for o in outputs]),
        [len(o) for o in outputs],
        [o.image_size for o in outputs],
    )


@torch.no_grad()
def assert_mask_head_is_upstreams(heads, features: Dict[str, Tensor], outputs: List[Instances]):
    """The heads' mask predictions in the boxes of ``outputs`` are Detectron2's
    (``forward_with_given_boxes``): probabilities within :data:`MASK_HEAD_TOL`, and where the
    heads run Turbo's path (``turbo.mask_head``) the logits too, within float rounding of their
    largest magnitude (randomly initialised heads reach logits of 1e4, where a rounding of the
    logit moves a probability near 0.5 by more)."""
    given = [
        Instances(o.image_size, pred_boxes=o.pred_boxes, pred_classes=o.pred_classes)
        for o in outputs
    ]
    upstream = torch.cat(
        [x.pred_masks[:, 0] for x in heads.forward_with_given_boxes(features, given)]
    )
    ours = _predicted_masks(heads, features, outputs)
    if not heads._selected_masks_apply():
        torch.testing.assert_close(ours, torch.nan_to_num(upstream, nan=0.0))
        return
    from turbo.mask_head import selected_mask_logits

    x = heads.mask_pooler(
        [features[f] for f in heads.mask_in_features], [o.pred_boxes for o in outputs]
    )
    classes = torch.cat([o.pred_classes for o in outputs])
    logits = heads.mask_head.layers(x)
    logits = logits[:, 0] if logits.shape[1] == 1 else logits[torch.arange(len(x)), classes]
    scale = float(logits.abs().max()) if len(logits) else 1.0
    torch.testing.assert_close(
        selected_mask_logits(heads.mask_head, x, classes), logits, rtol=1e-4, atol=1e-5 * scale
    )
    if scale < 50:  # a trained head's range: the probabilities match too
        torch.testing.assert_close(ours, upstream, **MASK_HEAD_TOL)


def assert_pasted_masks_inside_boxes(masks: Tensor, boxes: Tensor, mask_size: int = 28) -> None:
    """Pasted (N, H, W) boolean masks lie in their (N, 4) boxes, give or take the half mask
    cell the bilinear paste may spill, and a pixel."""
    for m, b in zip(masks, boxes):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(xs) == 0:
            continue
        slack = (b[2:] - b[:2]) / mask_size + 1
        assert xs.min() >= b[0] - slack[0] and xs.max() + 1 <= b[2] + slack[0]
        assert ys.min() >= b[1] - slack[1] and ys.max() + 1 <= b[3] + slack[1]
