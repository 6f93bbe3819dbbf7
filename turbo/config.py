"""Config keys of Turbo-Inference (``MODEL.TURBO``) and their validation."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from detectron2.config import CfgNode as CN

__all__ = ["add_turbo_config", "TurboParams", "AUTO", "EMPTY_MASK_MODES", "MASKNESS_SOURCES"]

# Value of a recipe key meaning "the head's published default" (see TurboParams.from_cfg).
AUTO = -1.0
SOFT_NMS_METHODS = ("linear", "gaussian", "hard")
EMPTY_MASK_MODES = ("keep", "drop")
MASKNESS_SOURCES = ("first", "last")


def add_turbo_config(cfg: CN) -> None:
    """Add the ``MODEL.TURBO`` node, with defaults, to a Detectron2 config (in place)."""
    _C = cfg
    _C.MODEL.TURBO = CN()
    # Turbo cycles after the first mask prediction: each cycle rescores, refines the boxes
    # from the masks and re-predicts the masks on the refined boxes. 0 = upstream inference.
    _C.MODEL.TURBO.NUM_ITERS = 1
    # Pasted-mask probability at or above which a pixel counts as foreground for the refined
    # box, in [0, 1]. -1 = the head's published recipe (0.20 Mask R-CNN, 0.23 cascade).
    _C.MODEL.TURBO.BOX_THRESH = AUTO
    # Mask cells at or above this probability enter Maskness (their mean), in [0, 1].
    # -1 = the head's published recipe (0.35 Mask R-CNN, 0.5 cascade).
    _C.MODEL.TURBO.MASKNESS_THRESH = AUTO
    # w in score <- (1 - w) * score + w * score * maskness, in [0, 1].
    # -1 = the head's published recipe (0.35 Mask R-CNN, 1.0 cascade).
    _C.MODEL.TURBO.MASKNESS_WEIGHT = AUTO
    # Weight kept by the input box: refined = f * input + (1 - f) * mask box, in [0, 1].
    # -1 = the head's published recipe (0.0 Mask R-CNN, 0.5 cascade).
    _C.MODEL.TURBO.BOX_FUSION = AUTO
    # Detections whose mask has no pixel >= BOX_THRESH: "keep" them with their input box and
    # mask, or "drop" them from the output.
    _C.MODEL.TURBO.EMPTY_MASK = "keep"
    # Masks Maskness is read from: "first" = the masks predicted on the detector's boxes
    # (published recipe), "last" = the output masks of the last cycle.
    _C.MODEL.TURBO.MASKNESS_SOURCE = "first"
    # A detection's mask is re-predicted in a cycle only when the IoU between its refined box
    # and the box its mask was predicted in is below this, in [0, 1]; otherwise it keeps both.
    # 1.0 = re-predict every mask (published recipe). Cycles stop early when none moves.
    _C.MODEL.TURBO.REPREDICT_IOU = 1.0
    # A detection's mask is re-predicted only when its detection score is at least this, in
    # [0, 1]: low-scoring detections, which weigh little in AP, skip the second mask-head
    # pass. 0.0 = no score condition (published recipe).
    _C.MODEL.TURBO.REPREDICT_MIN_SCORE = 0.0
    # Detections whose mask is not re-predicted (REPREDICT_IOU < 1 or REPREDICT_MIN_SCORE > 0)
    # still take their refined box, their mask resampled into it (True); or keep the box
    # their mask was predicted in (False).
    _C.MODEL.TURBO.RESAMPLE_MASKS = False

    _C.MODEL.TURBO.SOFT_NMS = CN()
    # Replace the per-class hard NMS of the box head by Soft-NMS (published Mask R-CNN recipe).
    _C.MODEL.TURBO.SOFT_NMS.ENABLED = True
    # Score decay: "linear" (1 - IoU above IOU_THRESH), "gaussian" (exp(-IoU^2 / SIGMA)),
    # "hard" (drop above IOU_THRESH, i.e. classic NMS).
    _C.MODEL.TURBO.SOFT_NMS.METHOD = "linear"
    # IoU above which "linear" decays and "hard" drops a box, in [0, 1].
    _C.MODEL.TURBO.SOFT_NMS.IOU_THRESH = 0.5
    # Gaussian decay width, > 0.
    _C.MODEL.TURBO.SOFT_NMS.SIGMA = 0.5
    # Boxes whose decayed score falls below this are discarded, in [0, 1].
    _C.MODEL.TURBO.SOFT_NMS.MIN_SCORE = 0.001


@dataclass(frozen=True)
class TurboParams:
    """Validated Turbo-Inference parameters of one ROI head (``MODEL.TURBO`` resolved)."""

    num_iters: int = 1
    box_thresh: float = 0.20
    maskness_thresh: float = 0.35
    maskness_weight: float = 0.35
    box_fusion: float = 0.0
    empty_mask: str = "keep"
    maskness_source: str = "first"
    repredict_iou: float = 1.0
    repredict_min_score: float = 0.0
    resample_masks: bool = False
    soft_nms: bool = True
    soft_nms_method: str = "linear"
    soft_nms_iou_thresh: float = 0.5
    soft_nms_sigma: float = 0.5
    soft_nms_min_score: float = 0.001

    def __post_init__(self) -> None:
        key = "MODEL.TURBO."
        if isinstance(self.num_iters, bool) or not isinstance(self.num_iters, int):
            raise ValueError(f"{key}NUM_ITERS must be an integer >= 0, got {self.num_iters!r}")
        if self.num_iters < 0:
            raise ValueError(f"{key}NUM_ITERS must be >= 0, got {self.num_iters}")
        for name in ("box_thresh", "maskness_thresh", "maskness_weight", "box_fusion"):
            _check_unit(key + name.upper(), getattr(self, name), auto_ok=True)
        _check_unit(key + "REPREDICT_IOU", self.repredict_iou)
        _check_unit(key + "REPREDICT_MIN_SCORE", self.repredict_min_score)
        _check_unit(key + "SOFT_NMS.IOU_THRESH", self.soft_nms_iou_thresh)
        _check_unit(key + "SOFT_NMS.MIN_SCORE", self.soft_nms_min_score)
        sigma = self.soft_nms_sigma
        if not _is_number(sigma) or not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"{key}SOFT_NMS.SIGMA must be a finite number > 0, got {sigma!r}")
        _check_choice(key + "SOFT_NMS.METHOD", self.soft_nms_method, SOFT_NMS_METHODS)
        _check_choice(key + "EMPTY_MASK", self.empty_mask, EMPTY_MASK_MODES)
        _check_choice(key + "MASKNESS_SOURCE", self.maskness_source, MASKNESS_SOURCES)
        if not isinstance(self.resample_masks, bool):
            raise ValueError(f"{key}RESAMPLE_MASKS must be True or False, "
                             f"got {self.resample_masks!r}")
        if not isinstance(self.soft_nms, bool):
            raise ValueError(f"{key}SOFT_NMS.ENABLED must be True or False, got {self.soft_nms!r}")

    @property
    def active(self) -> bool:
        """Whether inference differs from the parent class at all."""
        return self.num_iters > 0 or self.soft_nms

    @property
    def adaptive(self) -> bool:
        """Whether cycles re-predict only some masks (``REPREDICT_IOU`` < 1 or
        ``REPREDICT_MIN_SCORE`` > 0)."""
        return self.repredict_iou < 1.0 or self.repredict_min_score > 0.0

    @classmethod
    def from_cfg(cls, cfg: CN, recipe: Mapping[str, float]) -> "TurboParams":
        """Read ``cfg.MODEL.TURBO``; keys left at -1 take their value from ``recipe``.

        Raises ValueError naming the key and its allowed range for any bad value, and when
        ``MODEL.MASK_ON`` is false (Turbo needs masks).
        """
        if "TURBO" not in cfg.MODEL:
            raise ValueError(
                "cfg has no MODEL.TURBO node: call turbo.add_turbo_config(cfg) before merging "
                "a turbo config file"
            )
        if not cfg.MODEL.MASK_ON:
            raise ValueError(
                f"MODEL.ROI_HEADS.NAME={cfg.MODEL.ROI_HEADS.NAME} needs a mask head, but "
                "MODEL.MASK_ON is False: set MODEL.MASK_ON True"
            )
        t = cfg.MODEL.TURBO

        def pick(name: str) -> Any:
            value = t[name.upper()]
            if _is_number(value) and value == AUTO:
                return float(recipe[name])
            return value

        return cls(
            num_iters=t.NUM_ITERS,
            box_thresh=pick("box_thresh"),
            maskness_thresh=pick("maskness_thresh"),
            maskness_weight=pick("maskness_weight"),
            box_fusion=pick("box_fusion"),
            empty_mask=t.EMPTY_MASK,
            maskness_source=t.MASKNESS_SOURCE,
            repredict_iou=t.REPREDICT_IOU,
            repredict_min_score=t.REPREDICT_MIN_SCORE,
            resample_masks=t.RESAMPLE_MASKS,
            soft_nms=t.SOFT_NMS.ENABLED,
            soft_nms_method=t.SOFT_NMS.METHOD,
            soft_nms_iou_thresh=t.SOFT_NMS.IOU_THRESH,
            soft_nms_sigma=t.SOFT_NMS.SIGMA,
            soft_nms_min_score=t.SOFT_NMS.MIN_SCORE,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_unit(key: str, value: Any, auto_ok: bool = False) -> None:
    if not _is_number(value) or not (0.0 <= value <= 1.0):
        also = " (or -1 in the config for the head's published recipe)" if auto_ok else ""
        raise ValueError(f"{key} must be a number in [0, 1]{also}, got {value!r}")


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
