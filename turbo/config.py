"""Turbo-Inference parameters: the ``MODEL.TURBO`` keys of a yacs config, the
:class:`TurboParams` a head holds (the ``model.roi_heads.turbo`` node of a LazyConfig), the
published recipes, and their validation.

Every default lives here once: :class:`TurboParams` and :class:`SoftNMSParams` hold them,
``add_turbo_config`` copies them into the yacs node, and the recipe keys (``box_thresh``,
``maskness_thresh``, ``maskness_weight``, ``box_fusion``, ``mask_fusion``,
``repredict_scale``, ``maskness_source``, ``rescore_agreement``) default to "unset" (``-1``
for the numbers and ``None`` for the others in yacs, ``None`` in Python and LazyConfig),
which the head resolves to its own recipe (:data:`MASK_RCNN_RECIPE` or
:data:`CASCADE_RECIPE`).

Bad values raise ``ValueError`` naming the key as the user wrote it: ``MODEL.TURBO.BOX_THRESH``
in a yacs config, ``model.roi_heads.turbo.box_thresh`` in a LazyConfig or in Python.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .ops import (
    NORMALIZED_EDGES,
    SOFT_NMS_IOU_THRESH,
    SOFT_NMS_METHODS,
    SOFT_NMS_MIN_SCORE,
    SOFT_NMS_SIGMA,
)

__all__ = [
    "add_turbo_config",
    "get_turbo_cfg",
    "TurboParams",
    "SoftNMSParams",
    "Recipe",
    "MASK_RCNN_RECIPE",
    "CASCADE_RECIPE",
    "PUBLISHED",
    "AUTO",
    "RECIPE_KEYS",
    "NUMERIC_RECIPE_KEYS",
    "MECHANISM_KEYS",
    "EMPTY_MASK_MODES",
    "MASKNESS_SOURCES",
    "MASK_EDGES",
    "yacs_key",
    "lazy_key",
]

# yacs value of a recipe key meaning "the head's published recipe" (``None`` in Python).
AUTO = -1.0
EMPTY_MASK_MODES = ("keep", "drop")
MASKNESS_SOURCES = ("first", "last", "both", "mean")
MASK_EDGES = ("probability",) + NORMALIZED_EDGES


@dataclass(frozen=True)
class Recipe:
    """The values of recipe keys left unset, per head class: the published thresholds, and
    how the default fuses the masks and reads them into the score (chosen on the tuning
    splits, ``docs/results/tune_default_*.md``)."""

    box_thresh: float
    maskness_thresh: float
    maskness_weight: float
    box_fusion: float
    # Averaging a re-predicted mask with its first one gained mask AP on Mask R-CNN and
    # nothing on the cascade (shapes_tune_large, docs/results/tune_default_*.md).
    mask_fusion: float
    # Re-predicting in the refined box widened by 10 % about its centre (the mask then
    # resampled into the refined box) gained mask AP on Mask R-CNN together with mask fusion,
    # and lost mask AP on the cascade at every width tried (shapes_tune_large,
    # docs/results/tune_default_*.md).
    repredict_scale: float
    # Both recipes rescore by the agreement of each re-predicted mask with its first one.
    # Where the published recipe weighs Maskness in part (Mask R-CNN, w = 0.35), the default
    # also rescores by the Maskness of both masks; where it already weighs Maskness fully (the
    # cascade, w = 1.0), a second Maskness factor would multiply every score once more by a
    # number below 1 and cost box AP (docs/results/tune_default_cascade.md), so the cascade
    # keeps the first masks' Maskness alone.
    maskness_source: str
    rescore_agreement: bool


# Mask R-CNN (TurboROIHeads and other StandardROIHeads): published thresholds.
MASK_RCNN_RECIPE = Recipe(
    box_thresh=0.20,
    maskness_thresh=0.35,
    maskness_weight=0.35,
    box_fusion=0.0,
    mask_fusion=0.5,
    repredict_scale=1.1,
    maskness_source="both",
    rescore_agreement=True,
)
# Cascades (HTC / Cascade Mask R-CNN; CascadeROIHeads subclasses): published thresholds.
CASCADE_RECIPE = Recipe(
    box_thresh=0.23,
    maskness_thresh=0.5,
    maskness_weight=1.0,
    box_fusion=0.5,
    mask_fusion=0.0,
    repredict_scale=1.0,
    maskness_source="first",
    rescore_agreement=True,
)
RECIPE_KEYS: Tuple[str, ...] = tuple(f.name for f in fields(Recipe))
# Recipe keys that are numbers: unset is -1 in yacs; the others are unset as None there.
NUMERIC_RECIPE_KEYS: Tuple[str, ...] = (
    "box_thresh",
    "maskness_thresh",
    "maskness_weight",
    "box_fusion",
    "mask_fusion",
    "repredict_scale",
)


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
    # Boxes whose decayed score falls below this are discarded, in [0, 1].
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

    The defaults go beyond the published method (:data:`PUBLISHED`) at a lower cost: only
    each image's 15 highest-scoring detections get a second mask-head pass (the others take
    the refined box, their mask resampled into it); the score is rescored by the agreement of
    a re-predicted mask with its first one too; each output mask's edge lies at half its
    interior level (the mean of its cells at or above half its peak); with the Mask R-CNN
    recipe a re-predicted mask is averaged with its first one and the score is rescored by the
    Maskness of both.
    """

    # Turbo cycles after the first mask prediction, >= 0: each refines the boxes from the
    # masks and predicts the masks again in the refined boxes. 0 = no cycle (upstream masks).
    num_iters: int = 1
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
    # Masks Maskness is read from: "first" (the detector's boxes, published), "last" (the
    # output masks), "both" (the score is rescored by each of the two), or "mean" (rescored
    # once by the mean of the two). Unset: the head's recipe.
    maskness_source: Optional[str] = None
    # Re-predict a mask only when IoU(refined box, its box) is below this, in [0, 1]; 1 = all.
    repredict_iou: float = 1.0
    # Re-predict a mask only when the detection's score is at least this, in [0, 1]; 0 = all.
    repredict_min_score: float = 0.0
    # Re-predict a mask only when the detection ranks among its image's top k by score,
    # k >= 0; 0 = no rank condition.
    repredict_topk: int = 15
    # Masks not re-predicted still take the refined box, resampled into it (True), or keep
    # the box they were predicted in (False).
    resample_masks: bool = True
    # Weight of the earlier mask, resampled into the refined box, in each re-predicted mask:
    # mask = f * earlier + (1 - f) * re-predicted, in [0, 1]; 0 = the re-predicted mask alone.
    # Unset: the head's recipe.
    mask_fusion: Optional[float] = None
    # Refined boxes at the mask's continuous threshold crossings instead of whole pixels.
    subpixel_boxes: bool = False
    # Where the pasted output mask's edge lies: "probability" (probability 0.5, published),
    # "half_peak" (half the mask's own peak) or "half_interior" (half its interior level, the
    # mean of its cells at or above half its peak): each output mask is divided by that level.
    mask_edge: str = "half_interior"
    # The mask head re-predicts in the refined box scaled by this about its centre, in [1, 2],
    # and the mask is resampled into the refined box; 1 = in the refined box itself.
    # Unset: the head's recipe.
    repredict_scale: Optional[float] = None
    # Rescore a re-predicted detection by the agreement (soft IoU) of its new mask with the
    # earlier one resampled into its box, weighted like Maskness. Unset: the head's recipe.
    rescore_agreement: Optional[bool] = None
    # The detection stage's suppression.
    soft_nms: SoftNMSParams = field(default_factory=SoftNMSParams)

    def __post_init__(self) -> None:
        if isinstance(self.soft_nms, Mapping):
            object.__setattr__(self, "soft_nms", _soft_nms_from(self.soft_nms, lazy_key))
        for name in RECIPE_KEYS:  # -1 (the yacs spelling of "unset") is accepted too
            value = getattr(self, name)
            if _is_number(value) and value == AUTO:
                object.__setattr__(self, name, None)
        _validate(_flat(self), lazy_key)
        if not isinstance(self.soft_nms, SoftNMSParams):
            raise ValueError(
                f"{lazy_key('soft_nms')} must be a SoftNMSParams or a mapping of "
                f"its fields, got {self.soft_nms!r}"
            )

    @property
    def active(self) -> bool:
        """Whether inference differs from the parent head at all."""
        return self.num_iters > 0 or self.soft_nms.enabled

    @property
    def adaptive(self) -> bool:
        """Whether a cycle re-predicts only some masks (a ``repredict_*`` condition is set)."""
        return self.repredict_iou < 1.0 or self.repredict_min_score > 0.0 or self.repredict_topk > 0

    @property
    def unresolved(self) -> Tuple[str, ...]:
        """Recipe keys still unset."""
        return tuple(k for k in RECIPE_KEYS if getattr(self, k) is None)

    def resolved(self, recipe: Recipe) -> TurboParams:
        """These parameters with every unset recipe key taken from ``recipe``."""
        return dataclasses.replace(self, **{k: getattr(recipe, k) for k in self.unresolved})

    def replace(self, **changes: Any) -> TurboParams:
        """A copy with ``changes``; ``soft_nms`` may be a mapping of the fields to change."""
        soft_nms = changes.get("soft_nms")
        if isinstance(soft_nms, Mapping):
            changes["soft_nms"] = dataclasses.replace(self.soft_nms, **soft_nms)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TurboParams:
        """From a mapping of field names (a LazyConfig node), naming unknown keys."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"{lazy_key('')[:-1]} has no key {', '.join(unknown)}; its keys "
                f"are {', '.join(sorted(names))}"
            )
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
        values = {f.name: t[f.name.upper()] for f in fields(cls) if f.name != "soft_nms"}
        values.update(_flat_mapping(t.SOFT_NMS, "soft_nms."))
        _validate(values, yacs_key)
        num_iters = values["num_iters"]
        if num_iters > 0 and not cfg.MODEL.MASK_ON:
            raise ValueError(
                f"MODEL.TURBO.NUM_ITERS is {num_iters}, but the model has no mask head "
                "(MODEL.MASK_ON False): set MODEL.TURBO.NUM_ITERS 0 for Soft-NMS alone, or "
                "MODEL.MASK_ON True"
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

    Recipe keys are unset (-1 for the thresholds, None for ``MASKNESS_SOURCE`` and
    ``RESCORE_AGREEMENT``): the head's recipe (:data:`MASK_RCNN_RECIPE`, :data:`CASCADE_RECIPE`).
    Each key's meaning is the comment on its :class:`TurboParams` field.
    """
    default = TurboParams()
    cfg.MODEL.TURBO = CN()
    for f in fields(TurboParams):
        if f.name == "soft_nms":
            continue
        value = getattr(default, f.name)
        if value is None:
            value = AUTO if f.name in NUMERIC_RECIPE_KEYS else None
        cfg.MODEL.TURBO[f.name.upper()] = value
    cfg.MODEL.TURBO.SOFT_NMS = CN()
    for f in fields(SoftNMSParams):
        cfg.MODEL.TURBO.SOFT_NMS[f.name.upper()] = getattr(default.soft_nms, f.name)


def get_turbo_cfg() -> CN:
    """Detectron2's default config with the ``MODEL.TURBO`` keys and PointRend's keys added
    (so that turbo and PointRend config files both merge into it)."""
    from detectron2.projects.point_rend import add_pointrend_config

    cfg = get_cfg()
    add_turbo_config(cfg)
    add_pointrend_config(cfg)
    return cfg


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


def _choice(choices: Tuple[str, ...]) -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(map(repr, choices))


_RECIPE = (
    lambda v: v is None or (_is_number(v) and v == AUTO) or _unit(v),
    "a number in [0, 1] (or unset: -1 in yacs, None in Python, for the head's recipe)",
)
_CHECKS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "num_iters": (_count, "an integer >= 0"),
    **dict.fromkeys(NUMERIC_RECIPE_KEYS, _RECIPE),
    "empty_mask": _choice(EMPTY_MASK_MODES),
    "maskness_source": (
        lambda v: v is None or v in MASKNESS_SOURCES,
        "one of " + ", ".join(map(repr, MASKNESS_SOURCES)) + " (or unset: None, the head's recipe)",
    ),
    "repredict_iou": (_unit, "a number in [0, 1]"),
    "repredict_min_score": (_unit, "a number in [0, 1]"),
    "repredict_topk": (_count, "an integer >= 0"),
    "resample_masks": (_bool, "True or False"),
    "subpixel_boxes": (_bool, "True or False"),
    "mask_edge": _choice(MASK_EDGES),
    "repredict_scale": (
        lambda v: v is None or (_is_number(v) and (v == AUTO or 1.0 <= v <= 2.0)),
        "a number in [1, 2] (or unset: -1 in yacs, None in Python, for the head's recipe)",
    ),
    "rescore_agreement": (
        lambda v: v is None or _bool(v),
        "True or False (or unset: None, the head's recipe)",
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
            raise ValueError(f"{key(path)} must be {allowed}, got {value!r}")


def _flat(params: Union[TurboParams, SoftNMSParams], prefix: str = "") -> Dict[str, Any]:
    return {
        prefix + f.name: getattr(params, f.name)
        for f in fields(params)
        if not isinstance(getattr(params, f.name), SoftNMSParams)
    }


def _flat_mapping(node: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    return {prefix + k.lower(): v for k, v in node.items()}


def _soft_nms_from(values: Mapping[str, Any], key: Callable[[str], str]) -> SoftNMSParams:
    names = {f.name for f in fields(SoftNMSParams)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"{key('soft_nms')} has no key {', '.join(unknown)}; its keys are "
            f"{', '.join(sorted(names))}"
        )
    _validate({"soft_nms." + k: v for k, v in values.items()}, key)
    return SoftNMSParams(**dict(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The keys by which the package defaults may depart from the published cycle (every mask
# re-predicted in its refined box, the score rescored by the first masks' Maskness).
MECHANISM_KEYS: Tuple[str, ...] = (
    "maskness_source",
    "repredict_iou",
    "repredict_min_score",
    "repredict_topk",
    "resample_masks",
    "mask_fusion",
    "subpixel_boxes",
    "repredict_scale",
    "rescore_agreement",
    "mask_edge",
)

# The published method exactly: one cycle, every mask re-predicted in its refined box itself
# (no fusion), whole-pixel refined boxes, Maskness of the first masks, mask edges at
# probability 0.5, Soft-NMS (linear, IoU 0.5); recipe keys unset (the head's published
# thresholds).
# ``configs/*/*_published.yaml`` spell the same in yacs.
PUBLISHED = TurboParams(
    num_iters=1,
    empty_mask="keep",
    maskness_source="first",
    repredict_iou=1.0,
    repredict_min_score=0.0,
    repredict_topk=0,
    resample_masks=False,
    mask_fusion=0.0,
    subpixel_boxes=False,
    repredict_scale=1.0,
    rescore_agreement=False,
    mask_edge="probability",
    soft_nms=SoftNMSParams(
        enabled=True, method="linear", iou_thresh=0.5, sigma=0.5, min_score=0.001
    ),
)
