"""Turbo-Inference parameters: the ``MODEL.TURBO`` keys of a yacs config, the
:class:`TurboParams` a head holds (the ``model.roi_heads.turbo`` node of a LazyConfig), the
published recipes, and their validation.

Every default lives here once: :class:`TurboParams` and :class:`SoftNMSParams` hold them,
``add_turbo_config`` copies them into the yacs node, and the recipe keys (``box_thresh``,
``maskness_thresh``, ``maskness_weight``, ``box_fusion``) default to "unset" (``-1`` in yacs,
``None`` in Python and LazyConfig), which the head resolves to its own recipe
(:data:`MASK_RCNN_RECIPE` or :data:`CASCADE_RECIPE`).

Bad values raise ``ValueError`` naming the key as the user wrote it: ``MODEL.TURBO.BOX_THRESH``
in a yacs config, ``model.roi_heads.turbo.box_thresh`` in a LazyConfig or in Python.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from detectron2.config import CfgNode as CN

from .ops import (
    INTERIOR_EDGE,
    SOFT_NMS_IOU_THRESH,
    SOFT_NMS_METHODS,
    SOFT_NMS_MIN_SCORE,
    SOFT_NMS_SIGMA,
)

__all__ = [
    "add_turbo_config",
    "TurboParams",
    "SoftNMSParams",
    "Recipe",
    "MASK_RCNN_RECIPE",
    "CASCADE_RECIPE",
    "AUTO",
    "AUTO_ITERS",
    "RECIPE_KEYS",
    "IDENTITY_MAP",
    "Knots",
    "ScoreMap",
    "is_class_score_map",
    "EMPTY_MASK_MODES",
    "MASKNESS_SOURCES",
    "MASK_EDGES",
    "REMOVED_KEYS",
    "yacs_key",
    "lazy_key",
]

# yacs value of a recipe key meaning "the head's published recipe" (``None`` in Python).
AUTO = -1.0
# yacs value of ``NUM_ITERS`` meaning "1 with a mask head, 0 without" (``None`` in Python).
AUTO_ITERS = -1
EMPTY_MASK_MODES = ("keep", "drop")
MASKNESS_SOURCES = ("first", "both")
MASK_EDGES = ("probability", INTERIOR_EDGE)

# Keys (field names) that were tried, measured and dropped (docs/results/ keeps their numbers,
# with the commit that had them): name -> what a config that sets one should do instead.
REMOVED_KEYS: Dict[str, str] = {
    "subpixel_boxes": "refined boxes are whole pixels, as the pasted mask's tight box",
    "repredict_iou": (
        "use repredict_topk and repredict_min_score to choose which masks are re-predicted"
    ),
    "resample_masks": (
        "masks not re-predicted are always resampled into their refined box, so that every "
        "mask lies in its output box"
    ),
    "mask_fusion": "every re-predicted mask is the mask head's own (published)",
    "repredict_scale": "masks are re-predicted in the refined box itself (published)",
    "rescore_agreement": "scores are rescored by Maskness alone (published)",
}
# Values of kept keys that were dropped the same way: (field, value) -> what to use instead.
REMOVED_VALUES: Dict[Tuple[str, Any], str] = {
    ("maskness_source", "last"): "use 'first' (published) or 'both'",
    ("maskness_source", "mean"): "use 'first' (published) or 'both'",
    ("mask_edge", "half_peak"): f"use 'probability' (published) or {INTERIOR_EDGE!r}",
}


# Knots ((x0, y0), ..., (xk, yk)) of one piecewise-linear score map.
Knots = Tuple[Tuple[float, float], ...]
# A score map: one knot list for every class, or a tuple of knot lists, one per class.
ScoreMap = Union[Knots, Tuple[Knots, ...]]

# No score map: scores are the rescored ones (the published method's).
IDENTITY_MAP: Knots = ((0.0, 0.0), (1.0, 1.0))


def is_class_score_map(score_map: Optional[ScoreMap]) -> bool:
    """Whether ``score_map`` holds one knot list per class (else one for all, or unset)."""
    return bool(score_map) and _is_class_knot_lists(score_map)


@dataclass(frozen=True)
class Recipe:
    """The values of recipe keys left unset, per head class: the published thresholds, and
    the score map that an unset ``score_map`` takes where the rescoring is the recipe's."""

    box_thresh: float
    maskness_thresh: float
    maskness_weight: float
    box_fusion: float
    # Knots of the map of the recipe's rescored scores back to the detector's scale: fitted
    # with no labels (``turbo.score_map.fit_score_map``, rank matching against the baseline
    # above each level) on the pooled tuning images of the shipped models of the head's kind,
    # with the package defaults (``python scripts/score_map.py``). Not part of the paper.
    score_map: Tuple[Tuple[float, float], ...] = IDENTITY_MAP


# Mask R-CNN (TurboROIHeads and other StandardROIHeads): published thresholds.
MASK_RCNN_RECIPE = Recipe(
    box_thresh=0.20,
    maskness_thresh=0.35,
    maskness_weight=0.35,
    box_fusion=0.0,
    score_map=(
        (0.0, 0.0),
        (0.05, 0.05),
        (0.108542, 0.1),
        (0.196669, 0.2),
        (0.278438, 0.3),
        (0.364953, 0.4),
        (0.458779, 0.5),
        (0.552262, 0.6),
        (0.646321, 0.7),
        (0.741972, 0.8),
        (0.839585, 0.9),
        (0.89352, 0.95),
        (1.0, 1.0),
    ),
)
# Cascades (HTC / Cascade Mask R-CNN; CascadeROIHeads subclasses): published thresholds.
CASCADE_RECIPE = Recipe(
    box_thresh=0.23,
    maskness_thresh=0.5,
    maskness_weight=1.0,
    box_fusion=0.5,
    score_map=(
        (0.0, 0.0),
        (0.05, 0.05),
        (0.082368, 0.1),
        (0.159839, 0.2),
        (0.238903, 0.3),
        (0.324518, 0.4),
        (0.406432, 0.5),
        (0.493273, 0.6),
        (0.584022, 0.7),
        (0.67226, 0.8),
        (0.770491, 0.9),
        (0.824175, 0.95),
        (1.0, 1.0),
    ),
)
# Recipe keys: unset (None; -1 in yacs) takes the head's recipe value.
RECIPE_KEYS: Tuple[str, ...] = ("box_thresh", "maskness_thresh", "maskness_weight", "box_fusion")


def yacs_key(path: str) -> str:
    """``"soft_nms.iou_thresh"`` -> ``"MODEL.TURBO.SOFT_NMS.IOU_THRESH"``."""
    return "MODEL.TURBO." + path.upper()


def lazy_key(path: str) -> str:
    """``"soft_nms.iou_thresh"`` -> ``"model.roi_heads.turbo.soft_nms.iou_thresh"``."""
    return "model.roi_heads.turbo." + path


@dataclass(frozen=True)
class SoftNMSParams:
    """The detection stage's suppression (``MODEL.TURBO.SOFT_NMS``)."""

    # Soft-NMS instead of the box head's hard NMS (published Mask R-CNN recipe).
    enabled: bool = True
    # Score decay: "linear" (1 - IoU above IOU_THRESH), "gaussian" (exp(-IoU^2 / SIGMA)),
    # "hard" (drop above IOU_THRESH: classic NMS).
    method: str = "linear"
    # IoU above which "linear" decays and "hard" drops a box, in [0, 1].
    iou_thresh: float = SOFT_NMS_IOU_THRESH
    # Gaussian decay width, > 0.
    sigma: float = SOFT_NMS_SIGMA
    # Boxes whose decayed score falls below this are discarded, in [0, 1]; so are those at or
    # below the box head's SCORE_THRESH_TEST when it is higher (the user's threshold wins).
    min_score: float = SOFT_NMS_MIN_SCORE

    def __post_init__(self) -> None:
        _validate(_flat(self, "soft_nms."), lazy_key)


@dataclass(frozen=True)
class TurboParams:
    """Turbo-Inference parameters of one ROI head.

    Recipe keys left ``None`` (or ``-1``) take the head's published recipe when the head is
    built (:meth:`resolved`). In a LazyConfig: ``model.roi_heads.turbo =
    L(TurboParams)(num_iters=1, soft_nms=L(SoftNMSParams)(enabled=True))``; ``soft_nms`` may
    also be given as a mapping of :class:`SoftNMSParams` fields.

    The defaults are the published method but for two departures: for speed, each image's 20
    best masks scoring at least 0.3 are re-predicted (``repredict_topk``,
    ``repredict_min_score``), not every mask; and the rescored scores
    are mapped back towards the detector's scale by the recipe's ``score_map`` (no order
    changes, so no AP). No other departure gained mask AP without costing box AP on both
    data domains and both architectures (``docs/results/mechanisms.md``), so every other
    mechanism is opt-in. Output masks are the mask head's probabilities in their output
    boxes, and scores, in [0, 1], are rescored once, by the first masks' Maskness.

    Unknown keys, and keys that were removed, raise ``ValueError`` naming them.
    """

    # Turbo cycles after the first mask prediction, >= 0: each refines the boxes from the
    # masks and predicts the masks again in the refined boxes. 0 = no cycle (upstream masks).
    # Unset (None; -1 in yacs): 1 for a head with a mask head, 0 (Soft-NMS alone) without.
    num_iters: Optional[int] = None
    # Pasted-mask probability at or above which a pixel is foreground for the refined box.
    box_thresh: Optional[float] = None
    # Mask cells at or above this probability enter Maskness (their mean).
    maskness_thresh: Optional[float] = None
    # w in score <- (1 - w) * score + w * score * maskness.
    maskness_weight: Optional[float] = None
    # Weight kept by the input box: refined = f * input + (1 - f) * mask box.
    box_fusion: Optional[float] = None
    # Detections whose mask has no pixel >= box_thresh: "keep" (their box and mask) or "drop".
    empty_mask: str = "keep"
    # Masks Maskness is read from: "first" (the detector's boxes, published) or opt-in "both"
    # (the score is rescored by the first masks' Maskness and again by the output masks',
    # so scores fall further below the detector's).
    maskness_source: str = "first"
    # Re-predict the masks of each image's top k detections by score only, k >= 0, the others
    # taking the refined box with their mask resampled into it: fewer mask-head passes for
    # little mask AP (the default 20: ``docs/results/mechanisms.md``,
    # ``docs/results/profile.md``); 0 = every mask (published).
    repredict_topk: int = 20
    # Re-predict only the masks of detections scoring at least this, in [0, 1] (the detection
    # stage's score, before rescoring), the others taking the refined box with their mask
    # resampled into it: the low-scoring masks whose re-prediction changes almost no AP
    # (``docs/results/mechanisms.md``); 0 = no score gate (published). With ``repredict_topk``
    # both apply: each image's top k scoring at least this.
    repredict_min_score: float = 0.3
    # Where the pasted output mask's edge lies: "probability" (probability 0.5, published:
    # output masks are the mask head's probabilities, Detectron2's contract). Opt-in
    # "half_interior" makes output masks no longer probabilities: each is divided by its
    # interior level (the mean of its cells at or above half its peak), so that the paste at
    # 0.5 reads its edge at half that level.
    mask_edge: str = "probability"
    # Knots ((0, 0), ..., (1, 1)) of a strictly increasing piecewise-linear map of the rescored
    # scores, x and y strictly increasing: it changes no order (no AP), only where a fixed
    # score threshold cuts, so that a threshold keeps about as many detections as without
    # Turbo (``turbo.score_map.fit_score_map`` fits one on unlabelled images; the command
    # ``projects/turbo/fit_score_map.py`` for a model). ((0, 0), (1, 1)) = no map (the
    # published scores). Or one such knot list per class, in class order (as many as
    # ``MODEL.ROI_HEADS.NUM_CLASSES``): each class's rescored scores mapped by its own map,
    # which changes no order within a class (COCO AP is computed per class: no AP) and also
    # matches the detector's mix of classes above a threshold
    # (``turbo.score_map.fit_class_score_maps``). Unset (None or (); [] in yacs): the recipe's
    # map where the rescoring keys (maskness_thresh, maskness_weight, maskness_source) are the
    # recipe's and "first", else no map (the heads warn: a map is fitted for one rescoring).
    score_map: Optional[ScoreMap] = None
    # The detection stage's suppression.
    soft_nms: SoftNMSParams = field(default_factory=SoftNMSParams)

    def __post_init__(self) -> None:
        if isinstance(self.soft_nms, Mapping):
            object.__setattr__(self, "soft_nms", _soft_nms_from(self.soft_nms, lazy_key))
        if not isinstance(self.soft_nms, SoftNMSParams):
            raise ValueError(
                f"{lazy_key('soft_nms')} must be a SoftNMSParams or a mapping of "
                f"its fields, got {self.soft_nms!r}"
            )
        if _is_knot_list(self.score_map):  # yacs and YAML give lists: hold tuples of floats
            knots = _knots(self.score_map)
            object.__setattr__(self, "score_map", knots or None)  # empty: unset
        elif _is_class_knot_lists(self.score_map):
            object.__setattr__(self, "score_map", tuple(_knots(m) for m in self.score_map))
        for name in RECIPE_KEYS + ("num_iters",):  # -1 (yacs' "unset") is accepted too
            value = getattr(self, name)
            if _is_number(value) and value == AUTO:
                object.__setattr__(self, name, None)
        _validate(_flat(self), lazy_key)

    @property
    def active(self) -> bool:
        """Whether inference differs from the parent head at all."""
        return self.num_iters != 0 or self.soft_nms.enabled

    @property
    def unresolved(self) -> Tuple[str, ...]:
        """Keys still unset: recipe keys, ``num_iters`` and ``score_map``."""
        keys = RECIPE_KEYS + ("num_iters", "score_map")
        return tuple(k for k in keys if getattr(self, k) is None)

    def recipe_rescoring(self) -> bool:
        """Whether the scores are rescored as the recipe rescores them (its Maskness
        thresholds unset, Maskness of the first masks): where its score map serves."""
        return (
            self.maskness_thresh is None
            and self.maskness_weight is None
            and self.maskness_source == "first"
        )

    def resolved(self, recipe: Recipe, mask_on: bool = True) -> TurboParams:
        """These parameters with every unset recipe key taken from ``recipe``, an unset
        ``num_iters`` 1 where the head has a mask head (``mask_on``), else 0, and an unset
        ``score_map`` the recipe's where the rescoring is the recipe's (``recipe_rescoring``),
        else :data:`IDENTITY_MAP`."""
        values = {k: getattr(recipe, k) for k in self.unresolved if k in RECIPE_KEYS}
        if self.num_iters is None:
            values["num_iters"] = 1 if mask_on else 0
        if self.score_map is None:
            values["score_map"] = recipe.score_map if self.recipe_rescoring() else IDENTITY_MAP
        return dataclasses.replace(self, **values)

    def replace(self, **changes: Any) -> TurboParams:
        """A copy with ``changes``; ``soft_nms`` may be a mapping of the fields to change."""
        soft_nms = changes.get("soft_nms")
        if isinstance(soft_nms, Mapping):
            _reject_unknown(soft_nms, {f.name for f in fields(SoftNMSParams)}, "soft_nms.")
            changes["soft_nms"] = dataclasses.replace(self.soft_nms, **soft_nms)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TurboParams:
        """From a mapping of field names (a LazyConfig node), naming unknown keys."""
        return cls(**dict(values))

    @classmethod
    def from_cfg(cls, cfg: CN) -> TurboParams:
        """``cfg.MODEL.TURBO`` as parameters (recipe keys at -1 stay unset).

        Raises ValueError naming the yacs key and its allowed range for any bad value, and
        when cycles are asked for on a model without a mask head.
        """
        if "TURBO" not in cfg.MODEL:
            raise ValueError(
                "cfg has no MODEL.TURBO node: call turbo.add_turbo_config(cfg) "
                "before merging a turbo config file"
            )
        t = cfg.MODEL.TURBO
        names = {f.name for f in fields(cls)}
        _reject_unknown({k.lower(): v for k, v in t.items()}, names, "", yacs_key)
        _reject_unknown(
            {k.lower(): v for k, v in t.SOFT_NMS.items()},
            {f.name for f in fields(SoftNMSParams)},
            "soft_nms.",
            yacs_key,
        )
        values = {f.name: t[f.name.upper()] for f in fields(cls) if f.name != "soft_nms"}
        values.update(_flat_mapping(t.SOFT_NMS, "soft_nms."))
        _validate(values, yacs_key)
        num_iters = values["num_iters"]
        if num_iters > 0 and not cfg.MODEL.MASK_ON:  # unset (-1) resolves to 0 there
            raise ValueError(
                f"MODEL.TURBO.NUM_ITERS is {num_iters}, but the model has no mask head "
                "(MODEL.MASK_ON False): set MODEL.TURBO.NUM_ITERS 0 (or -1, unset) for Soft-NMS "
                "alone, or MODEL.MASK_ON True"
            )
        top = {k: v for k, v in values.items() if not k.startswith("soft_nms.")}
        return cls(
            **top,
            soft_nms=_soft_nms_from(
                {k[len("soft_nms.") :]: v for k, v in values.items() if k.startswith("soft_nms.")},
                yacs_key,
            ),
        )


def add_turbo_config(cfg: CN) -> None:
    """Add the ``MODEL.TURBO`` node, with the defaults of :class:`TurboParams`, in place.

    Recipe keys are unset (-1): the head's recipe (:data:`MASK_RCNN_RECIPE`,
    :data:`CASCADE_RECIPE`); so is ``NUM_ITERS`` (-1: 1 with a mask head, 0 without).
    Each key's meaning is the comment on its :class:`TurboParams` field.
    """
    default = TurboParams()
    cfg.MODEL.TURBO = CN()
    for f in fields(TurboParams):
        if f.name == "soft_nms":
            continue
        value = getattr(default, f.name)
        if f.name == "score_map":
            value = []  # unset: a list, the type yacs lets a config file give
        elif value is None:
            value = AUTO_ITERS if f.name == "num_iters" else AUTO
        cfg.MODEL.TURBO[f.name.upper()] = value
    cfg.MODEL.TURBO.SOFT_NMS = CN()
    for f in fields(SoftNMSParams):
        cfg.MODEL.TURBO.SOFT_NMS[f.name.upper()] = getattr(default.soft_nms, f.name)
    # A config file or command line that sets a removed key fails naming it (yacs' renamed-key
    # error is the hook its merge offers for a key that is gone).
    for name, instead in REMOVED_KEYS.items():
        if not cfg.key_is_renamed(yacs_key(name)):
            cfg.register_renamed_key(yacs_key(name), "nothing (the key was removed)", instead)


# The generated ``__init__`` would reject a removed or unknown field with a bare TypeError;
# this one names it as every other bad key is named (``dataclasses.replace`` calls it too).
_dataclass_init = TurboParams.__init__


@functools.wraps(_dataclass_init)
def _init(self: TurboParams, *args: Any, **kwargs: Any) -> None:
    _reject_unknown(kwargs, {f.name for f in fields(TurboParams)})
    _dataclass_init(self, *args, **kwargs)


TurboParams.__init__ = _init


# ------------------------------------------------------------------------------------------
# Validation: one table of what each key accepts, used for yacs and LazyConfig alike
# ------------------------------------------------------------------------------------------
def _unit(v: Any) -> bool:
    return _is_number(v) and 0.0 <= v <= 1.0


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _positive(v: Any) -> bool:
    return _is_number(v) and v > 0 and math.isfinite(v)


def _is_knot_list(v: Any) -> bool:
    """A sequence of (x, y) number pairs: lists and tuples, or a LazyConfig's list nodes."""

    def seq(x: Any) -> bool:
        return isinstance(x, Sequence) and not isinstance(x, str)

    return seq(v) and all(seq(k) and len(k) == 2 and all(_is_number(a) for a in k) for k in v)


def _is_class_knot_lists(v: Any) -> bool:
    """A non-empty sequence of non-empty knot lists (one score map per class)."""
    return (
        isinstance(v, Sequence)
        and not isinstance(v, str)
        and len(v) > 0
        and all(_is_knot_list(m) and len(m) > 0 for m in v)
    )


def _knots(v: Any) -> Knots:
    return tuple((float(x), float(y)) for x, y in v)


def _score_map(v: Any) -> bool:
    if v is None:
        return True
    if _is_knot_list(v) and len(v) == 0:  # unset
        return True
    if _is_class_knot_lists(v):
        return all(_one_score_map(m) for m in v)
    return _is_knot_list(v) and _one_score_map(v)


def _one_score_map(v: Any) -> bool:
    xs, ys = [float(k[0]) for k in v], [float(k[1]) for k in v]
    return (
        len(v) >= 2
        and (xs[0], ys[0], xs[-1], ys[-1]) == (0.0, 0.0, 1.0, 1.0)
        and all(a < b for a, b in zip(xs, xs[1:]))
        and all(a < b for a, b in zip(ys, ys[1:]))
    )


def _choice(choices: Tuple[str, ...]) -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(map(repr, choices))


_RECIPE = (
    lambda v: v is None or (_is_number(v) and v == AUTO) or _unit(v),
    "a number in [0, 1] (or unset: -1 in yacs, None in Python, for the head's recipe)",
)
_CHECKS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "num_iters": (
        lambda v: v is None or (_is_number(v) and v == AUTO_ITERS) or _count(v),
        "an integer >= 0 (or unset: -1 in yacs, None in Python, for 1 with a mask head and "
        "0 without)",
    ),
    **dict.fromkeys(RECIPE_KEYS, _RECIPE),
    "empty_mask": _choice(EMPTY_MASK_MODES),
    "maskness_source": _choice(MASKNESS_SOURCES),
    "repredict_topk": (_count, "an integer >= 0"),
    "repredict_min_score": (_unit, "a number in [0, 1]"),
    "mask_edge": _choice(MASK_EDGES),
    "score_map": (
        _score_map,
        "unset (None, (); [] in yacs), knots ((0, 0), ..., (1, 1)) whose x and y both "
        "strictly increase, or one such knot list per class",
    ),
    "soft_nms.enabled": (_bool, "True or False"),
    "soft_nms.method": _choice(SOFT_NMS_METHODS),
    "soft_nms.iou_thresh": (_unit, "a number in [0, 1]"),
    "soft_nms.sigma": (_positive, "a finite number > 0"),
    "soft_nms.min_score": (_unit, "a number in [0, 1]"),
}


def _validate(values: Mapping[str, Any], key: Callable[[str], str]) -> None:
    """Raise ValueError for the first value of ``values`` (path -> value) out of range."""
    for path, value in values.items():
        ok, allowed = _CHECKS[path]
        if not ok(value):
            instead = REMOVED_VALUES.get((path, value)) if isinstance(value, str) else None
            if instead is not None:
                raise ValueError(f"{key(path)} {value!r} was removed: {instead}")
            raise ValueError(f"{key(path)} must be {allowed}, got {value!r}")


def _reject_unknown(
    values: Mapping[str, Any],
    names: Iterable[str],
    prefix: str = "",
    key: Callable[[str], str] = lazy_key,
) -> None:
    """Raise ValueError naming the first key of ``values`` (field names under ``prefix``) that
    is not among ``names``: a removed key says so and what to do instead."""
    names = set(names)
    for name in values:
        if name in names:
            continue
        if not prefix and name in REMOVED_KEYS:
            raise ValueError(f"{key(name)} was removed: {REMOVED_KEYS[name]}")
        node = key(prefix[:-1]) if prefix else key("")[:-1]
        known = sorted(key(prefix + n).rsplit(".", 1)[-1] for n in names)
        name = key(prefix + name).rsplit(".", 1)[-1]
        raise ValueError(f"{node} has no key {name}; its keys are {', '.join(known)}")


def _flat(params: Union[TurboParams, SoftNMSParams], prefix: str = "") -> Dict[str, Any]:
    """Every field of ``params`` but the nested ``soft_nms`` node, by path."""
    return {
        prefix + f.name: getattr(params, f.name) for f in fields(params) if f.name != "soft_nms"
    }


def _flat_mapping(node: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    return {prefix + k.lower(): v for k, v in node.items()}


def _soft_nms_from(values: Mapping[str, Any], key: Callable[[str], str]) -> SoftNMSParams:
    _reject_unknown(values, {f.name for f in fields(SoftNMSParams)}, "soft_nms.", key)
    _validate({"soft_nms." + k: v for k, v in values.items()}, key)
    return SoftNMSParams(**dict(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
