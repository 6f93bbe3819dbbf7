"""A score map that needs no labels: Turbo's rescored scores mapped so that a fixed threshold
keeps as many detections as the baseline's scores keep.

Maskness rescoring multiplies every score by a factor at most 1, so a user who keeps the
detections above a score keeps fewer objects with Turbo than without. A strictly increasing
map of the final scores changes no order (no AP) and can undo that: :func:`fit_score_map`
matches ranks, sending the score of Turbo's k-th best detection to the score of the
baseline's k-th best, over a set of images with no annotations needed. Each head's recipe
carries one (``turbo.config.Recipe.score_map``), used while the rescoring is the recipe's;
:func:`fit_model_score_map` (the command ``projects/turbo/fit_score_map.py``) fits one for a
model and its parameters. Set the knots as ``MODEL.TURBO.SCORE_MAP``
(``model.roi_heads.turbo.score_map``); the heads apply them with
:func:`turbo.ops.piecewise_linear`.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .config import IDENTITY_MAP

__all__ = [
    "fit_score_map",
    "collect_scores",
    "fit_model_score_map",
    "same_score_map",
    "SCORE_LEVELS",
    "KNOT_TOLERANCE",
]

# How far apart two fits of one model on the same images may place a knot. A knot's x lies
# midway between two of Turbo's scores; another build of PyTorch or another CPU rounds the
# scores otherwise (a few 1e-7), which can move a score across a level and so the knot to
# the next pair of scores (up to about 2e-4 apart on the shipped models).
KNOT_TOLERANCE = 1e-3

# Baseline scores at which a knot is placed: a threshold there keeps, on the fitting images,
# exactly as many Turbo detections as baseline ones (linear between the knots).
SCORE_LEVELS: Tuple[float, ...] = (
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    0.95,
)


def fit_score_map(
    baseline_scores: Tensor,
    turbo_scores: Tensor,
    levels: Sequence[float] = SCORE_LEVELS,
    floor: float = 0.0,
) -> Tuple[Tuple[float, float], ...]:
    """Knots ((0, 0), ..., (1, 1)) of a strictly increasing map of Turbo's final scores.

    Args:
        baseline_scores: (Nb,) scores of the baseline's detections on some images.
        turbo_scores: (Nt,) Turbo's final scores (unmapped) on the same images.
        levels: baseline scores in (0, 1) at which to place a knot.
        floor: the model's score threshold (``SCORE_THRESH_TEST``), in [0, 1): the map is the
            identity up to it (a knot at (floor, floor)) and levels at or below it are left
            out, so that the map keeps exactly the detections the threshold keeps without it,
            in the same order: AP unchanged.

    For each level y with n baseline scores above it, the knot's x lies between Turbo's n-th
    and (n + 1)-th highest scores, so a threshold at y after the map keeps n Turbo detections
    too. Levels whose x would not increase strictly (or that Turbo's scores cannot reach) are
    left out; the map is linear between the knots and from (0, 0) and to (1, 1).
    """
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor (the score threshold) must lie in [0, 1), got {floor}")
    b = torch.sort(baseline_scores.flatten().double(), descending=True).values
    t = torch.sort(turbo_scores.flatten().double(), descending=True).values
    knots = [(0.0, 0.0)] + ([(floor, floor)] if floor > 0.0 else [])
    for y in sorted(levels):
        if not 0.0 < y < 1.0:
            raise ValueError(f"score levels must lie in (0, 1), got {y}")
        if y <= floor:
            continue
        n = int((b > y).sum())
        if n == 0 or n >= len(t):
            continue
        x = 0.5 * float(t[n - 1] + t[n])  # n of Turbo's scores lie above x
        if knots[-1][0] < x < 1.0 and knots[-1][1] < y:
            knots.append((x, float(y)))
    knots.append((1.0, 1.0))
    out = [(round(x, 6), round(y, 6)) for x, y in knots]
    return tuple(k for i, k in enumerate(out) if i == 0 or k[0] > out[i - 1][0])


def same_score_map(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], tol: float = KNOT_TOLERANCE
) -> bool:
    """Whether the knots ``a`` and ``b`` are one fit up to the float rounding of the scores it
    was made on (:data:`KNOT_TOLERANCE`): as many knots, each coordinate within ``tol``."""
    return len(a) == len(b) and all(
        abs(p - q) <= tol for ka, kb in zip(a, b) for p, q in zip(ka, kb, strict=True)
    )


@torch.no_grad()
def collect_scores(model: nn.Module, batches: Iterable[List[dict]]) -> Tuple[Tensor, Tensor]:
    """(baseline scores, Turbo's unmapped final scores) of a model with turbo ROI heads over
    ``batches`` of Detectron2 inputs (images only: no annotation is read), for
    :func:`fit_score_map`. The baseline is Detectron2's own inference (no cycle, hard NMS);
    Turbo runs with the model's own parameters, its score map left out."""
    heads = model.roi_heads
    base, turbo = [], []
    for batch in batches:
        with heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
            base += [r["instances"].scores.float().cpu() for r in model(batch)]
        with heads.turbo_params(score_map=IDENTITY_MAP):
            turbo += [r["instances"].scores.float().cpu() for r in model(batch)]
    return torch.cat(base), torch.cat(turbo)


def fit_model_score_map(
    model: nn.Module, batches: Iterable[List[dict]], levels: Sequence[float] = SCORE_LEVELS
) -> Tuple[Tuple[float, float], ...]:
    """The score map of a model with turbo ROI heads and its own Turbo parameters, fitted on
    ``batches`` of Detectron2 inputs (images only): :func:`collect_scores`, then
    :func:`fit_score_map` with the identity up to the box predictor's score threshold, so
    that the detections kept at that threshold, and their order, are the unmapped ones."""
    heads = model.roi_heads
    floor = float(heads.final_box_predictor().test_score_thresh)
    return fit_score_map(*collect_scores(model, batches), levels=levels, floor=floor)
