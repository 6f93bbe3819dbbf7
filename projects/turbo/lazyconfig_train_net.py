#!/usr/bin/env python
"""Train or evaluate a Detectron2 model from a LazyConfig (``.py``) with Turbo-Inference.

Same command line as Detectron2's ``tools/lazyconfig_train_net.py``::

    python projects/turbo/lazyconfig_train_net.py --eval-only \
        --config-file configs/new_baselines/turbo_mask_rcnn_R_50_FPN_400ep_LSJ.py \
        model.roi_heads.turbo.num_iters=2

Evaluation instantiates ``model``, loads ``train.init_checkpoint`` and reports the metrics of
``dataloader.evaluator`` (COCO box and mask AP) on ``dataloader.test``. Training follows
Detectron2's (``optimizer``, ``lr_multiplier``, ``dataloader.train``, ``train.*``); the turbo
heads change inference only. Multi-process and multi-machine runs go through Detectron2's
launcher (``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``); where CUDA
is not available the processes use gloo and the model runs on CPU.
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.utils import comm

from turbo.build import resolve_device
from turbo.datasets import register_synthetic_datasets
from turbo.launch import create_ddp_model, launch
from turbo.lazy import evaluate_lazy

logger = logging.getLogger("detectron2")


def train(args, cfg):
    """Detectron2's LazyConfig training loop: SimpleTrainer (AMPTrainer with train.amp),
    periodic checkpoints, evaluation every ``train.eval_period`` iterations."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer_class = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    trainer = trainer_class(model, loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: evaluate_lazy(cfg, model)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    register_synthetic_datasets()
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    cfg.train.device = resolve_device(cfg.train.get("device", "cuda"))
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return evaluate_lazy(cfg, model)
    return train(args, cfg)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args)
