"""Shared fixtures: small randomly initialised Detectron2 models built from the turbo configs."""
import copy
import os
import sys

import pytest
import torch

import detectron2  # noqa: F401  (a missing Detectron2 must fail the run loudly, not skip)
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import turbo  # noqa: F401  (registers the heads)
from turbo import add_turbo_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
sys.path.insert(0, os.path.join(ROOT, "projects", "turbo"))

# One thread: the tiny models are dominated by per-op overhead, which extra threads on a
# small (or busy) machine only add to.
torch.set_num_threads(1)


def tiny_cfg(head: str = "TurboROIHeads", **overrides):
    """A small Mask R-CNN / Cascade config on CPU; ``overrides`` are "KEY": value pairs."""
    cfg = get_cfg()
    add_turbo_config(cfg)
    base = "Base-Turbo-Cascade-RCNN-FPN.yaml" if "Cascade" in head else "Base-Turbo-RCNN-FPN.yaml"
    cfg.merge_from_file(os.path.join(CONFIGS, base))
    opts = {
        "MODEL.DEVICE": "cpu",
        "MODEL.ROI_HEADS.NAME": head,
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
    opts.update(overrides)
    for k, v in opts.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


def randomize_heads(model, seed: int = 0):
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


def build(cfg, seed: int = 0, state_dict=None):
    torch.manual_seed(seed)
    model = build_model(cfg)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    else:
        randomize_heads(model, seed)
    model.eval()
    return model


def make_images(sizes=((64, 96), (80, 64)), seed: int = 0):
    """Batched inputs as Detectron2 expects them: CHW uint8-range float tensors, BGR."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        img = torch.rand(3, h, w, generator=g) * 255
        # a few bright blobs so that proposals differ between locations
        for _ in range(3):
            y, x = torch.randint(0, h - 8, (1,), generator=g), torch.randint(0, w - 8, (1,), generator=g)
            img[:, y : y + 16, x : x + 20] = 255
        out.append({"image": img, "height": h, "width": w})
    return out


@pytest.fixture
def images():
    return make_images()


def clone_inputs(inputs):
    return [copy.copy(x) for x in inputs]
