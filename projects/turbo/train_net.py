#!/usr/bin/env python
"""Train or evaluate a Detectron2 model (yacs config) with Turbo-Inference ROI heads.

Same command line as Detectron2's ``tools/train_net.py``::

    python projects/turbo/train_net.py --config-file configs/shapes/turbo_mask_rcnn_R18_FPN.yaml \
        --eval-only MODEL.WEIGHTS checkpoints/shapes_mask_rcnn_R18_FPN.pth

Training is Detectron2's own (the turbo heads only change inference); each test dataset is
evaluated by the evaluators of its ``evaluator_type`` (``turbo.evaluation.build_evaluator``:
COCO, LVIS, Cityscapes, semantic, panoptic, Pascal VOC, as Detectron2's tools do), and also
under test-time augmentation when
``TEST.AUG.ENABLED`` is set (keys ``bbox_TTA``, ``segm_TTA``; turbo cycles on TTA's merged
detections, ``turbo.tta``). Multi-process and multi-machine runs go through Detectron2's
launcher (``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``); where CUDA
is not available the processes use gloo and the model runs on CPU. LazyConfig (``.py``)
configs go through ``lazyconfig_train_net.py``.
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import os

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import verify_results

from turbo.build import load_config, resolve_device
from turbo.datasets import register_synthetic_datasets
from turbo.evaluation import build_evaluator
from turbo.launch import launch
from turbo.tta import TurboRCNNWithTTA


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose evaluators follow each dataset's ``evaluator_type``
    (:func:`turbo.evaluation.build_evaluator`) and whose test-time augmentation runs the turbo
    cycles."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``model`` under ``TEST.AUG`` (:class:`turbo.tta.TurboRCNNWithTTA`); results
        go to ``OUTPUT_DIR/inference_TTA/<dataset>``, their keys get the suffix ``_TTA``."""
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, TurboRCNNWithTTA(cfg, model), evaluators)
        return {f"{key}_TTA": value for key, value in res.items()}


def setup(args):
    """Config from ``--config-file`` and trailing ``KEY VALUE`` overrides (turbo and PointRend
    keys added); CUDA asked for but missing -> CPU."""
    cfg = load_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    register_synthetic_datasets()
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args)
