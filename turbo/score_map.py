"""A score map that needs no labels: Turbo's rescored scores mapped so that a fixed threshold
keeps as many detections as the baseline's scores keep.

Maskness rescoring multiplies every score by a factor at most 1, so a user who keeps the
detections above a score keeps fewer objects with Turbo than without. A strictly increasing
map of the final scores changes no order (no AP) and can undo that: :func:`fit_score_map`
matches ranks, sending the score of Turbo's k-th best detection to the score of the
baseline's k-th best, over a set of images with no annotations needed. Maskness is not the
same for every class (a thin shape's mask is softer than a square's), so one map for all
classes keeps the baseline's count above a threshold but not its mix of classes;
:func:`fit_class_score_maps` fits one map per class, which changes no order within a class
(COCO AP is computed per class: no AP either) and keeps the mix too. Each head's recipe
carries one shared map (``turbo.config.Recipe.score_map``), used while the rescoring is the
recipe's, for a model whose classes it does not know; :func:`fit_model_score_map` (the
command ``projects/turbo/fit_score_map.py``) fits a model's own, one or one per class. Set
the knots as ``MODEL.TURBO.SCORE_MAP`` (``model.roi_heads.turbo.score_map``); the heads apply
them with :func:`turbo.ops.piecewise_linear` or :func:`turbo.ops.class_piecewise_linear`.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .config import IDENTITY_MAP, Knots, ScoreMap, is_class_score_map

__all__ = [
    "fit_score_map",
    "fit_class_score_maps",
    "collect_scores",
    "collect_detections",
    "fit_model_score_map",
    "same_score_map",
    "SCORE_LEVELS",
    "KNOT_TOLERANCE",
    "CLASS_MIN_DETECTIONS",
    "CLASS_OWN_FROM",
]

# Baseline detections of a class, on the fitting images, below which the class takes the map
# fitted on all classes instead of its own: a per-class rank matching is only as good as its
# class's sample. On the shapes cascade, per-class maps fitted on 200 images (about 1300
# detections a class) kept the validation split's precision above 0.7 no closer to the
# baseline's than one shared map did, and fitted on 1000 images (about 6500 a class) closer.
CLASS_MIN_DETECTIONS = 1000

# The lowest score level at which a class's own knots are placed (:func:`fit_class_score_maps`);
# below it every class takes the map fitted on all classes. Maps per class serve the top of
# the list, where a threshold keeps few detections of each class and how far Maskness lowers
# a class decides which it keeps: on the shapes cascades, kept at the baseline's detection
# count above 0.7, one map for all classes ranked box precision 0.6 points below the
# baseline's, maps per class from 0.1 below to 0.2 above (docs/results/score_map.md). Lower,
# the two rankings were level, and maps per class at every level made only the count less
# sure: fitted on shapes_tune_large, they kept the held-out cascade's box precision above 0.3
# on shapes_val 0.9 points below the baseline's, more detections kept than the baseline's
# (score_map.md at commit a5b7f1f); shared knots below 0.5, 0.4 points below. The level was
# chosen on shapes_val.
CLASS_OWN_FROM = 0.5

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
) -> Knots:
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


def fit_class_score_maps(
    baseline_scores: Tensor,
    baseline_classes: Tensor,
    turbo_scores: Tensor,
    turbo_classes: Tensor,
    num_classes: int,
    levels: Sequence[float] = SCORE_LEVELS,
    floor: float = 0.0,
    min_detections: int = CLASS_MIN_DETECTIONS,
    own_from: float = CLASS_OWN_FROM,
) -> Tuple[Knots, ...]:
    """One score map per class (class 0 first), each :func:`fit_score_map` on that class's
    detections alone, so that a threshold keeps, per class, as many Turbo detections as
    baseline ones on the fitting images; with ``own_from``, only from that level up.

    Args:
        baseline_scores, baseline_classes: (Nb,) scores and int classes of the baseline's
            detections on some images.
        turbo_scores, turbo_classes: (Nt,) Turbo's final scores (unmapped) and classes on
            the same images.
        num_classes: the model's classes (``MODEL.ROI_HEADS.NUM_CLASSES``).
        levels, floor: as :func:`fit_score_map`.
        min_detections: a class with fewer baseline or Turbo detections than this takes the
            map fitted on every class's detections (:data:`CLASS_MIN_DETECTIONS`).
        own_from: the lowest level, in [0, 1), at which a class's own knots are placed;
            below it every class takes the knots of the map fitted on every class's
            detections (those left of its own first knot: the map stays strictly
            increasing), from it up its own (:data:`CLASS_OWN_FROM`). 0: its own knots at
            every level.
    """
    if not 0.0 <= own_from < 1.0:
        raise ValueError(f"own_from (a score level) must lie in [0, 1), got {own_from}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, classes, scores in (
        ("baseline", baseline_classes, baseline_scores),
        ("turbo", turbo_classes, turbo_scores),
    ):
        if classes.shape != scores.shape:
            raise ValueError(
                f"{name}_classes must have the shape of {name}_scores, "
                f"{tuple(scores.shape)}, got {tuple(classes.shape)}"
            )
        if classes.numel() and not 0 <= int(classes.min()) <= int(classes.max()) < num_classes:
            raise ValueError(f"{name}_classes must lie in [0, {num_classes}), the model's classes")
    shared = fit_score_map(baseline_scores, turbo_scores, levels, floor)
    below = [k for k in shared[:-1] if k[1] < own_from]  # the shared knots below own_from
    maps = []
    for c in range(num_classes):
        b, t = baseline_scores[baseline_classes == c], turbo_scores[turbo_classes == c]
        if min(b.numel(), t.numel()) < min_detections:
            maps.append(shared)
            continue
        own = fit_score_map(b, t, [y for y in levels if y >= own_from], floor)
        own = [k for k in own if k[1] >= own_from]  # ends with (1, 1)
        maps.append(tuple([k for k in below if k[0] < own[0][0]] + own))
    return tuple(maps)


def same_score_map(a: ScoreMap, b: ScoreMap, tol: float = KNOT_TOLERANCE) -> bool:
    """Whether the score maps ``a`` and ``b`` (each one knot list, or one per class) are one
    fit up to the float rounding of the scores it was made on (:data:`KNOT_TOLERANCE`): as
    many maps and knots, each coordinate within ``tol``."""
    if is_class_score_map(a) or is_class_score_map(b):
        return (
            is_class_score_map(a)
            and is_class_score_map(b)
            and len(a) == len(b)
            and all(_same_knots(x, y, tol) for x, y in zip(a, b))
        )
    return _same_knots(a, b, tol)


def _same_knots(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], tol: float) -> bool:
    return len(a) == len(b) and all(
        abs(p - q) <= tol for ka, kb in zip(a, b) for p, q in zip(ka, kb, strict=True)
    )


@torch.no_grad()
def collect_detections(
    model: nn.Module, batches: Iterable[List[dict]]
) -> Tuple[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor]]:
    """((baseline scores, classes), (Turbo's unmapped final scores, classes)) of a model with
    turbo ROI heads over ``batches`` of Detectron2 inputs (images only: no annotation is
    read), for :func:`fit_score_map` and :func:`fit_class_score_maps`. The baseline is
    Detectron2's own inference (no cycle, hard NMS); Turbo runs with the model's own
    parameters, its score map left out."""
    heads = model.roi_heads
    base: List[Tuple[Tensor, Tensor]] = []
    turbo: List[Tuple[Tensor, Tensor]] = []

    def kept(outputs: List[dict]) -> List[Tuple[Tensor, Tensor]]:
        return [
            (r["instances"].scores.float().cpu(), r["instances"].pred_classes.cpu())
            for r in outputs
        ]

    for batch in batches:
        with heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
            base += kept(model(batch))
        with heads.turbo_params(score_map=IDENTITY_MAP):
            turbo += kept(model(batch))

    def joined(rows: List[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        if not rows:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return torch.cat([s for s, _ in rows]), torch.cat([c for _, c in rows])

    return joined(base), joined(turbo)


def collect_scores(model: nn.Module, batches: Iterable[List[dict]]) -> Tuple[Tensor, Tensor]:
    """(baseline scores, Turbo's unmapped final scores) of :func:`collect_detections`."""
    (base, _), (turbo, _) = collect_detections(model, batches)
    return base, turbo


def fit_model_score_map(
    model: nn.Module,
    batches: Iterable[List[dict]],
    levels: Sequence[float] = SCORE_LEVELS,
    per_class: bool = False,
    own_from: float = CLASS_OWN_FROM,
) -> ScoreMap:
    """The score map of a model with turbo ROI heads and its own Turbo parameters, fitted on
    ``batches`` of Detectron2 inputs (images only): :func:`collect_detections`, then
    :func:`fit_class_score_maps` (``per_class``, one map per class of the heads, each its
    own from the level ``own_from`` up) or :func:`fit_score_map` (one map), with the identity
    up to the box predictor's score threshold, so that the detections kept at that
    threshold, and their order within each class, are the unmapped ones."""
    heads = model.roi_heads
    floor = float(heads.final_box_predictor().test_score_thresh)
    (b, bc), (t, tc) = collect_detections(model, batches)
    if per_class:
        return fit_class_score_maps(
            b, bc, t, tc, heads.num_classes, levels=levels, floor=floor, own_from=own_from
        )
    return fit_score_map(b, t, levels=levels, floor=floor)
