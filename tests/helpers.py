"""Test helpers that read this repository's configs: small randomly initialised models of the
turbo base configs, and the published cycle's mechanisms."""

from __future__ import annotations

import os
from typing import Any, Dict

import torch
from detectron2.modeling import build_model
from torch import Tensor, nn

from turbo.config import MECHANISM_KEYS, PUBLISHED, TurboParams, get_turbo_cfg
from turbo.testing import randomize_heads

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
    """``params`` with the published cycle's mechanisms (:data:`turbo.config.MECHANISM_KEYS` as in
    :data:`turbo.config.PUBLISHED`), its thresholds and cycle count kept."""
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
