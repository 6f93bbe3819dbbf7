"""Synthetic workloads, to measure turbo without data or trained weights: blob-like soft
masks and their boxes, box-head candidates as a COCO-like and an LVIS-like detector yields
them, and randomly initialised models whose boxes stay inside the image. Everything here
needs only the installed package (no repository files).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "random_soft_masks",
    "coco_like_candidates",
    "lvis_like_candidates",
    "zero_box_regression",
    "random_model",
]


def random_soft_masks(
    n: int, m: int, h: int, w: int, device: str = "cpu", seed: int = 0
) -> Tuple[Tensor, Tensor]:
    """n blob-like soft masks (n, m, m) and their boxes (n, 4) XYXY inside an h x w image."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 0.8 - 0.4
    r = torch.rand(n, 1, 1, generator=g) * 0.5 + 0.3
    d = ((xx[None] - c[:, 0, None, None]) ** 2 + (yy[None] - c[:, 1, None, None]) ** 2).sqrt()
    probs = torch.sigmoid((r - d) * 12 + torch.randn(n, m, m, generator=g) * 0.5)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 8
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh)
    return probs.to(device), torch.cat([xy, xy + wh], 1).to(device)


def coco_like_candidates(
    n_objects: int = 100,
    per_object: int = 20,
    num_classes: int = 80,
    h: int = 800,
    w: int = 1333,
    seed: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Box-head candidates as a detector yields them (boxes (N, 4), scores (N,), classes
    (N,)): clusters of jittered boxes around objects, each spread over a few classes."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n_objects, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
    xy = torch.rand(n_objects, 2, generator=g) * (torch.tensor([w, h]) - wh)
    centre = torch.cat([xy, xy + wh], 1).repeat_interleave(per_object, 0)
    size = wh.repeat(1, 2).repeat_interleave(per_object, 0)
    boxes = centre + torch.randn(len(centre), 4, generator=g) * size * 0.08
    boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], 1)
    base_cls = torch.randint(0, num_classes, (n_objects,), generator=g)
    cls = (
        base_cls.repeat_interleave(per_object) + torch.randint(0, 3, (len(boxes),), generator=g) * 7
    ) % num_classes
    scores = torch.rand(len(boxes), generator=g) * 0.9 + 0.05
    return boxes, scores, cls


def lvis_like_candidates(
    n_proposals: int = 1000,
    per_proposal: int = 20,
    num_classes: int = 1203,
    score_thresh: float = 1e-4,
    h: int = 800,
    w: int = 1333,
    seed: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Box-head candidates of a long-tailed (LVIS-like) detector at a low score threshold
    (boxes (N, 4), scores (N,), classes (N,), N = ``n_proposals * per_proposal``): proposals
    clustered around a hundred objects, each proposal passing the threshold for
    ``per_proposal`` classes (its object's class and others), scores log-uniform in
    [``score_thresh``, 1], so most of them are tiny as a softmax over many classes gives."""
    g = torch.Generator().manual_seed(seed)
    n_objects = 100
    boxes, _, _ = coco_like_candidates(n_objects, n_proposals // n_objects, 1, h, w, seed)
    obj_cls = torch.randint(0, num_classes, (n_objects,), generator=g)
    first = obj_cls.repeat_interleave(n_proposals // n_objects)
    others = torch.randint(0, num_classes, (len(boxes), per_proposal - 1), generator=g)
    cls = torch.cat([first[:, None], others], dim=1).flatten()
    boxes = boxes.repeat_interleave(per_proposal, 0)
    log_lo = math.log(score_thresh)
    scores = torch.exp(log_lo + torch.rand(len(cls), generator=g) * -log_lo)
    return boxes, scores, cls


def zero_box_regression(model: nn.Module) -> nn.Module:
    """Zero the RPN's and the box head's regression (every cascade stage), in place: the
    proposals are the anchors and the boxes the proposals, so that a randomly initialised
    model yields distinct boxes inside the image, as a trained one does (random regression
    on unnormalised features throws boxes off the image)."""
    heads = model.roi_heads
    predictors = (
        heads.box_predictor
        if isinstance(heads.box_predictor, nn.ModuleList)
        else [heads.box_predictor]
    )
    with torch.no_grad():
        for layer in [model.proposal_generator.rpn_head.anchor_deltas] + [
            p.bbox_pred for p in predictors
        ]:
            layer.weight.zero_()
            layer.bias.zero_()
    return model


def random_model(
    config: str, device: str = "cpu", opts: Sequence[str] = (), seed: int = 0
) -> nn.Module:
    """The model of ``config`` (a path) with seeded random weights and every box kept
    (``SCORE_THRESH_TEST`` 0, :func:`zero_box_regression`): 100 distinct boxes out of every
    image, each costing the mask head what a trained model's does. The score gate is off
    (``REPREDICT_MIN_SCORE`` 0): random weights score every detection near 1 / classes, so
    the gate would re-predict none; off, the top ``REPREDICT_TOPK`` are re-predicted, as a
    trained model's confident detections are (the gate's worst case). ``opts``: more yacs
    overrides, ``KEY VALUE ...``."""
    from ..build import build_turbo_model, load_config

    cfg = load_config(
        config,
        [
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
            "MODEL.TURBO.REPREDICT_MIN_SCORE",
            "0.0",
            *opts,
        ],
    )
    torch.manual_seed(seed)
    return zero_box_regression(build_turbo_model(cfg, device)).eval()
