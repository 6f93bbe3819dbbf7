"""The rows of a benchmark: inference variants of one model, each a :class:`TurboParams`.

Every model gets the headline rows (:func:`headline_variants`); the full sweep adds more
cycles, the re-prediction rules and the other mechanisms, one change at a time
(:func:`sweep_variants`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import IDENTITY_MAP, Recipe, SoftNMSParams, TurboParams

__all__ = [
    "PUBLISHED",
    "MECHANISM_KEYS",
    "default_params",
    "Variant",
    "headline_variants",
    "sweep_variants",
    "full_sweep_variants",
    "describe_change",
]


# The keys by which a setting may depart from the published cycle (every mask re-predicted in
# its refined box, the score rescored by the first masks' Maskness, probability masks, the
# rescored scores as they are).
MECHANISM_KEYS: Tuple[str, ...] = (
    "maskness_source",
    "repredict_topk",
    "repredict_min_score",
    "mask_edge",
    "score_map",
)

# The published method exactly: one cycle, every mask re-predicted in its refined box,
# Maskness of the first masks, mask edges at probability 0.5, no score map, Soft-NMS (linear,
# IoU 0.5, kept down to 0.001); recipe keys unset (the head's published thresholds).
# ``configs/*/*_published.yaml`` spell the same in yacs.
PUBLISHED = TurboParams(
    num_iters=1,
    empty_mask="keep",
    maskness_source="first",
    repredict_topk=0,
    repredict_min_score=0.0,
    mask_edge="probability",
    score_map=IDENTITY_MAP,
    soft_nms=SoftNMSParams(
        enabled=True, method="linear", iou_thresh=0.5, sigma=0.5, min_score=0.001
    ),
)


@dataclass(frozen=True)
class Variant:
    """One row of a benchmark: the model ``model`` (a key of the models dict) run with
    ``params``."""

    name: str  # unique across the benchmark: the label, prefixed by the model's but for the first
    model: str
    params: TurboParams
    kind: str = ""  # "baseline", "soft_nms", "turbo", "default", "published", "config",
    # "cycles" or "sweep"
    label: str = ""  # the row's name within its model

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


def _row(prefix: str, label: str, model: str, params: TurboParams, kind: str) -> Variant:
    return Variant(prefix + label, model, params, kind, label)


def default_params(recipe: Recipe, configured: Optional[TurboParams] = None) -> TurboParams:
    """The package defaults resolved with ``recipe``, with the score map of ``configured``
    (a model's resolved params) where that config runs the package defaults with a map of its
    own (``SCORE_MAP`` fitted for the model, ``projects/turbo/fit_score_map.py``): the map
    belongs to the model, the recipe's serves a model without one."""
    default = TurboParams().resolved(recipe)
    if configured is not None and configured.replace(score_map=default.score_map) == default:
        return configured
    return default


def headline_variants(
    model: str,
    recipe: Recipe,
    configured: Optional[TurboParams] = None,
    prefix: str = "",
    config_row: bool = True,
) -> List[Variant]:
    """baseline (hard NMS, no cycle), + Soft-NMS, + Turbo (the package defaults, hard NMS),
    + Turbo + Soft-NMS (the package defaults), the published recipe where it differs from the
    defaults (else the default row says it is the published recipe), and, with
    ``config_row``, the config's own parameters where they differ from both (e.g. thresholds
    tuned for a dataset).

    ``recipe``: the head's recipe (unset recipe keys); ``configured``: the model's params as
    its config sets them (resolved); the rows built from the defaults carry its score map
    where it has one for them (:func:`default_params`)."""
    default = default_params(recipe, configured)
    published = PUBLISHED.resolved(recipe)
    off = {"enabled": False}
    same = default == published
    rows = [
        _row(prefix, "baseline", model, default.replace(num_iters=0, soft_nms=off), "baseline"),
        _row(prefix, "+ Soft-NMS", model, default.replace(num_iters=0), "soft_nms"),
        _row(prefix, "+ Turbo", model, default.replace(soft_nms=off), "turbo"),
        _row(
            prefix,
            "+ Turbo + Soft-NMS (default" + (" = published recipe)" if same else ")"),
            model,
            default,
            "default",
        ),
    ]
    if not same:
        rows.append(
            _row(prefix, "+ Turbo + Soft-NMS, published recipe", model, published, "published")
        )
    if config_row and configured is not None and configured not in (default, published):
        rows.append(_row(prefix, "+ Turbo + Soft-NMS, config", model, configured, "config"))
    return rows


def describe_change(change: Dict[str, Any]) -> str:
    """``{"repredict_topk": 10, "soft_nms": {"enabled": False}}`` -> "repredict_topk=10,
    soft_nms.enabled=False"."""
    parts = []
    for k, v in change.items():
        if isinstance(v, dict):
            parts += [f"{k}.{kk}={vv}" for kk, vv in v.items()]
        elif k == "score_map" and v == IDENTITY_MAP:
            parts.append("no score_map")
        elif v is True:
            parts.append(k)
        elif v is False:
            parts.append(f"no {k}")
        else:
            parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def sweep_variants(
    model: str,
    base: TurboParams,
    changes: Sequence[Dict[str, Any]],
    prefix: str = "",
    label: str = "",
    kind: str = "sweep",
) -> List[Variant]:
    """``base`` with each change of ``changes`` in turn (one row each, labelled ``label`` and
    the change; changes that leave ``base`` as it is are skipped)."""
    rows = []
    for change in changes:
        params = base.replace(**change)
        if params != base:
            rows.append(_row(prefix, label + describe_change(change), model, params, kind))
    return rows


def full_sweep_variants(
    model: str,
    recipe: Recipe,
    prefix: str = "",
    cycles: Sequence[int] = (2, 3),
    configured: Optional[TurboParams] = None,
) -> List[Variant]:
    """The benchmark's full sweep, beyond the headline rows: the default with more cycles;
    the published recipe with each mechanism the default may use, one at a time; and the
    default without each of them, one at a time (the default: :func:`default_params`)."""
    default = default_params(recipe, configured)
    published = PUBLISHED.resolved(recipe)
    mechanisms = [
        {"repredict_topk": 10},
        {"repredict_topk": 15},
        {"maskness_source": "both"},
        {"mask_edge": "half_interior"},
    ]
    undo = [{k: getattr(published, k)} for k in MECHANISM_KEYS]
    return (
        sweep_variants(
            model, default, [{"num_iters": c} for c in cycles], prefix, "default, ", kind="cycles"
        )
        + sweep_variants(model, published, mechanisms, prefix, "published + ")
        + sweep_variants(model, default, undo, prefix, "default, ")
    )
