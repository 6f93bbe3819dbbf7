"""The user-facing entry points on a real (small, random) model: DefaultPredictor and
``projects/turbo/train_net.py --eval-only`` with COCOEvaluator on a registered dataset."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor, default_argument_parser
from pycocotools import mask as mask_util

from turbo.build import get_turbo_cfg
from turbo.datasets import register_tiny_shapes

from helpers import CONFIGS, assert_pasted_masks_inside_boxes, build, tiny_cfg

HEADS = ["TurboROIHeads", "TurboCascadeROIHeads"]
TURBO = {
    "on": {"MODEL.TURBO.NUM_ITERS": 1},
    "off": {"MODEL.TURBO.NUM_ITERS": 0, "MODEL.TURBO.SOFT_NMS.ENABLED": False},
}


def _checkpoint(cfg, path):
    model = build(cfg)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    DetectionCheckpointer(model, save_dir=os.path.dirname(path)).save(
        os.path.splitext(os.path.basename(path))[0]
    )
    return path


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("mode", ["on", "off"])
def test_default_predictor(head, mode, tmp_path):
    cfg = tiny_cfg(head, **TURBO[mode])
    cfg.MODEL.WEIGHTS = _checkpoint(cfg, str(tmp_path / "model.pth"))
    predictor = DefaultPredictor(cfg)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(70, 90, 3), dtype=np.uint8)  # BGR, HWC
    image[10:40, 20:60] = 255
    inst = predictor(image)["instances"]
    assert inst.image_size == (70, 90)
    assert len(inst) > 0
    assert inst.pred_masks.shape == (len(inst), 70, 90) and inst.pred_masks.dtype == torch.bool
    b = inst.pred_boxes.tensor
    assert torch.all(b[:, 0] >= 0) and torch.all(b[:, 2] <= 90)
    assert torch.all(b[:, 1] >= 0) and torch.all(b[:, 3] <= 70)
    assert torch.all(b[:, 2] >= b[:, 0]) and torch.all(b[:, 3] >= b[:, 1])
    assert inst.has("maskness") == (mode == "on")
    assert_pasted_masks_inside_boxes(inst.pred_masks, b)


def _run_train_net(entry_point, args_list):
    args = default_argument_parser().parse_args(args_list)
    return entry_point("train_net").main(args)


@pytest.mark.parametrize("head", HEADS)
def test_train_net_eval_only(head, tmp_path, monkeypatch, entry_point):
    monkeypatch.setenv("TURBO_DATASETS", str(tmp_path / "data"))
    register_tiny_shapes(eager=True)
    cfg_file = os.path.join(
        CONFIGS,
        "shapes",
        "turbo_mask_rcnn_R18_FPN.yaml"
        if head == "TurboROIHeads"
        else "turbo_cascade_mask_rcnn_R18_FPN.yaml",
    )
    cfg = get_turbo_cfg()
    cfg.merge_from_file(cfg_file)
    cfg.MODEL.DEVICE = "cpu"
    weights = _checkpoint(cfg, str(tmp_path / "w" / "model.pth"))
    for mode, opts in TURBO.items():
        out = tmp_path / mode
        extra = [x for kv in opts.items() for x in (kv[0], str(kv[1]))]
        res = _run_train_net(
            entry_point,
            [
                "--config-file",
                cfg_file,
                "--eval-only",
                "MODEL.DEVICE",
                "cpu",
                "MODEL.WEIGHTS",
                weights,
                "DATASETS.TEST",
                "('shapes_tiny',)",
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                "0.0",
                "OUTPUT_DIR",
                str(out),
            ]
            + extra,
        )
        assert set(res) == {"bbox", "segm"}
        for task in ("bbox", "segm"):
            assert {"AP", "AP50", "AP75"} <= set(res[task])
            assert all(0 <= res[task][k] <= 100 for k in ("AP", "AP50", "AP75"))
        dets = json.load(open(out / "inference" / "shapes_tiny" / "coco_instances_results.json"))
        assert len(dets) > 0
        for d in dets[:200]:
            h, w = d["segmentation"]["size"]
            assert (h, w) == (64, 96)  # the tiny images' original size
            x, y, bw, bh = d["bbox"]
            assert -1e-3 <= x and x + bw <= w + 1e-3 and -1e-3 <= y and y + bh <= h + 1e-3
            m = mask_util.decode(d["segmentation"])
            assert m.shape == (64, 96)


def test_same_command_without_cuda(tmp_path, entry_point):
    """The shapes configs leave MODEL.DEVICE at Detectron2's default ("cuda"): train_net runs
    them on CPU where CUDA is missing, so one command serves both machines."""
    train_net = entry_point("train_net")
    cfg_file = os.path.join(CONFIGS, "shapes", "turbo_mask_rcnn_R18_FPN.yaml")
    args = default_argument_parser().parse_args(
        ["--config-file", cfg_file, "OUTPUT_DIR", str(tmp_path)]
    )
    cfg = train_net.setup(args)
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")


def test_lazyconfig_path_gives_the_yacs_ap(tmp_path, monkeypatch, entry_point):
    """The shipped shapes Mask R-CNN through lazyconfig_train_net.py (LazyConfig .py) and
    through train_net.py (yacs .yaml): the same COCO box and mask AP on the same images."""
    monkeypatch.setenv("TURBO_DATASETS", str(tmp_path / "data"))
    register_tiny_shapes(eager=True)
    lazy = entry_point("lazyconfig_train_net").main(
        default_argument_parser().parse_args(
            [
                "--config-file",
                os.path.join(CONFIGS, "shapes", "turbo_mask_rcnn_R18_FPN.py"),
                "--eval-only",
                "dataloader.test.dataset.names=shapes_tiny",
                "dataloader.test.num_workers=0",
                f"train.output_dir={tmp_path / 'lazy'}",
            ]
        )
    )
    yacs = _run_train_net(
        entry_point,
        [
            "--config-file",
            os.path.join(CONFIGS, "shapes", "turbo_mask_rcnn_R18_FPN.yaml"),
            "--eval-only",
            "MODEL.WEIGHTS",
            os.path.join(os.path.dirname(CONFIGS), "checkpoints", "shapes_mask_rcnn_R18_FPN.pth"),
            "DATASETS.TEST",
            "('shapes_tiny',)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "yacs"),
        ],
    )
    assert set(lazy) == set(yacs) == {"bbox", "segm"}
    assert lazy["bbox"]["AP50"] > 20  # a trained model: the comparison means something
    for task in ("bbox", "segm"):  # repr: nan (no object of that size) equals nan
        assert {k: repr(v) for k, v in lazy[task].items()} == {
            k: repr(v) for k, v in yacs[task].items()
        }, task
    dets = json.load(
        open(tmp_path / "lazy" / "inference" / "shapes_tiny" / "coco_instances_results.json")
    )
    assert len(dets) > 0
