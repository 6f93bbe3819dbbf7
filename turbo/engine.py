"""What the entry points share: dataset registration, Detectron2's launcher with a clean
process-group teardown, and the evaluation of a LazyConfig model."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional

import detectron2.utils.comm as comm
import torch
import torch.distributed as dist
from detectron2.config import instantiate
from detectron2.engine import launch as d2_launch
from detectron2.engine.defaults import create_ddp_model as d2_create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format

from .data import register_shapes, register_tiny_shapes

__all__ = ["register_datasets", "launch", "create_ddp_model", "evaluate_lazy"]


def register_datasets() -> None:
    """Register the shapes datasets (``shapes_train``, ``shapes_val``, ``shapes_tune``,
    ``shapes_tune_large``, and ``shapes_tiny`` for smoke runs), generated on first use under
    ``$TURBO_DATASETS``; Detectron2's builtin datasets (COCO, ...) are registered by Detectron2
    itself."""
    register_shapes()
    register_tiny_shapes()


def _run_then_teardown(main_func: Callable[[Any], Any], args: Any) -> Any:
    """``main_func(args)`` in one process of a launch; when the process is part of a process
    group, waits for every rank, then destroys the group before the interpreter exits.
    (Detectron2's launcher leaves the group alive; a gloo group left alive at exit can abort
    the process with SIGABRT while its threads are torn down, turning a finished evaluation
    into a failed launch.)"""
    result = main_func(args)
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()
    return result


def launch(main_func: Callable[[Any], Any], args: Any) -> None:
    """``detectron2.engine.launch`` with the standard command-line arguments (``--num-gpus``,
    ``--num-machines``, ``--machine-rank``, ``--dist-url``): NCCL where CUDA is visible, gloo
    otherwise; each process tears its process group down cleanly."""
    d2_launch(
        functools.partial(_run_then_teardown, main_func),
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


def create_ddp_model(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
    """Detectron2's ``create_ddp_model`` (the model itself in a single process), usable on CPU:
    Detectron2 always passes ``device_ids=[local rank]``, which DistributedDataParallel refuses
    for a module on CPU, so a CPU model gets ``device_ids=None`` unless the caller sets them."""
    if next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return d2_create_ddp_model(model, **kwargs)


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
