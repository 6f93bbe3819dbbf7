"""Turbo in LazyConfig configs: switch a model's ROI heads to their Turbo version.

::

    from detectron2 import model_zoo
    from turbo.lazy import use_turbo

    cfg = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_400ep_LSJ.py", trained=True)
    use_turbo(cfg.model)                       # model.roi_heads.turbo = L(TurboParams)(...)

Every field of :class:`~turbo.config.TurboParams` is written into the config, so each one
can be overridden from the command line: ``model.roi_heads.turbo.num_iters=2``,
``model.roi_heads.turbo.soft_nms.enabled=False``. Recipe keys stay ``None``: the head's own
published recipe (Mask R-CNN, or cascade for a ``CascadeROIHeads``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Optional

from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import CascadeROIHeads, FastRCNNOutputLayers
from detectron2.utils.registry import locate
from omegaconf import DictConfig

from .config import SoftNMSParams, TurboParams
from .heads import turbo_heads

__all__ = ["use_turbo", "turbo_params_node", "make_cascade", "evaluate_lazy"]

# Cascade stages as Detectron2's cascades are trained: (IoU threshold of the proposal matcher,
# box-regression weights) per stage.
CASCADE_STAGES = ((0.5, (10, 10, 5, 5)), (0.6, (20, 20, 10, 10)), (0.7, (30, 30, 15, 15)))


def turbo_params_node(**params: Any) -> DictConfig:
    """``L(TurboParams)(...)`` with every field explicit: the defaults, then ``params``
    (``soft_nms`` as a mapping of the :class:`SoftNMSParams` fields to change)."""
    p = TurboParams().replace(**params)
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "soft_nms"}
    return L(TurboParams)(**fields, soft_nms=L(SoftNMSParams)(**dataclasses.asdict(p.soft_nms)))


def use_turbo(model: DictConfig, **params: Any) -> DictConfig:
    """Switch ``model.roi_heads`` (a ``StandardROIHeads`` or ``CascadeROIHeads`` subclass) to
    its Turbo version (:func:`turbo.heads.turbo_heads`) with ``params``, in place; returns the
    ROI heads node."""
    heads = model.roi_heads
    target = heads._target_
    heads._target_ = turbo_heads(locate(target) if isinstance(target, str) else target)
    heads.turbo = turbo_params_node(**params)
    return heads


def make_cascade(heads: DictConfig, box_head: DictConfig, stages=CASCADE_STAGES) -> DictConfig:
    """Turn a LazyConfig ``StandardROIHeads`` node into a ``CascadeROIHeads`` one, in place:
    one copy of ``box_head`` and one class-agnostic ``FastRCNNOutputLayers`` per stage, each
    stage with its matcher IoU and regression weights (``stages``); the mask head, poolers and
    everything else stay. Call :func:`use_turbo` afterwards for the Turbo version."""
    for key in ("box_head", "box_predictor", "proposal_matcher"):
        heads.pop(key, None)
    heads.update(
        _target_=CascadeROIHeads,
        box_heads=[copy.deepcopy(box_head) for _ in stages],
        box_predictors=[
            L(FastRCNNOutputLayers)(
                input_shape=ShapeSpec(channels=box_head.fc_dims[-1]),
                test_score_thresh=0.05,
                box2box_transform=L(Box2BoxTransform)(weights=weights),
                cls_agnostic_bbox_reg=True,
                num_classes="${...num_classes}",
            )
            for _, weights in stages
        ],
        proposal_matchers=[
            L(Matcher)(thresholds=[iou], labels=[0, 1], allow_low_quality_matches=False)
            for iou, _ in stages
        ],
    )
    return heads


def evaluate_lazy(cfg, model) -> Optional[dict]:
    """COCO metrics of ``model`` on a LazyConfig's ``dataloader.test`` with its
    ``dataloader.evaluator`` (None when the config has no evaluator), printed in Detectron2's
    copy-paste format."""
    if "evaluator" not in cfg.dataloader:
        logging.getLogger(__name__).warning(
            "the config has no dataloader.evaluator: nothing to evaluate"
        )
        return None
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(results)
    return results
