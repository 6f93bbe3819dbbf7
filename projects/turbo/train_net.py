#!/usr/bin/env python
"""Train or evaluate a Detectron2 model with Turbo-Inference ROI heads.

Same command line as Detectron2's ``tools/train_net.py``::

    python projects/turbo/train_net.py --config-file configs/shapes/turbo_mask_rcnn_R18_FPN.yaml \
        --eval-only MODEL.WEIGHTS checkpoints/shapes_mask_rcnn_R18_FPN.pth MODEL.DEVICE cpu

Training is Detectron2's own (the turbo heads only change inference); evaluation reports
COCO box and mask AP through ``COCOEvaluator``, and also under Detectron2's test-time
augmentation when ``TEST.AUG.ENABLED`` is set (keys ``bbox_TTA``, ``segm_TTA``; turbo cycles
on TTA's merged detections: see ``turbo/tta.py``). Multi-process and multi-machine runs go through
``detectron2.engine.launch`` (``--num-gpus``, ``--num-machines``, ``--machine-rank``,
``--dist-url``); where CUDA is not available the processes use the gloo backend. The shapes
datasets (``shapes_train``, ``shapes_val``, ``shapes_tune``, and ``shapes_tiny`` for smoke
runs) are registered here and generated on first use under ``$TURBO_DATASETS``.
"""
import logging
import os

import torch
import torch.distributed as dist

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, verify_results

from turbo import add_turbo_config
from turbo.data import register_shapes, register_tiny_shapes
from turbo.tta import TurboRCNNWithTTA


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose evaluator is COCO-style box and mask AP."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``model`` under ``TEST.AUG`` test-time augmentation, turbo cycles included
        (:class:`turbo.tta.TurboRCNNWithTTA`). Results are written
        to ``OUTPUT_DIR/inference_TTA/<dataset>``; their keys get the suffix ``_TTA``."""
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, TurboRCNNWithTTA(cfg, model), evaluators)
        return {f"{key}_TTA": value for key, value in res.items()}


def setup(args):
    """Config from ``--config-file`` and trailing ``KEY VALUE`` overrides, turbo keys added."""
    cfg = get_cfg()
    add_turbo_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cuda_missing = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if cuda_missing:  # the same command trains and evaluates on a GPU machine or a CPU one
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    if cuda_missing:
        logging.getLogger("detectron2").warning(
            "MODEL.DEVICE asks for CUDA, which is not available here: running on CPU")
    return cfg


def main(args):
    register_shapes()
    register_tiny_shapes()
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


def run(args):
    """``main`` in one process of a ``launch``: when the process is part of a process group,
    waits for every rank, then destroys the group before the interpreter exits. (Detectron2's
    launcher leaves the group alive; a gloo group left alive at exit can abort the process
    with SIGABRT while its threads are torn down, turning a finished evaluation into a
    failed launch.)"""
    res = main(args)
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()
    return res


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
