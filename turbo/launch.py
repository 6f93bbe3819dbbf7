"""Multi-process runs: Detectron2's launcher with a clean process-group teardown, and
Detectron2's ``create_ddp_model`` usable on CPU (gloo)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import detectron2.utils.comm as comm
import torch
import torch.distributed as dist
from detectron2.engine import launch as d2_launch
from detectron2.engine.defaults import create_ddp_model as d2_create_ddp_model

__all__ = ["launch", "create_ddp_model"]


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
