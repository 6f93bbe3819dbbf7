"""Side-by-side timing: medians over repeats, warm-up first, the variants alternating so that
drifts of the machine affect them all alike."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..build import turbo_heads_of
from .variants import Variant

__all__ = ["time_calls", "latency_samples", "peak_extra_memory_mib"]


def _synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)


def time_calls(
    calls: Mapping[str, Callable[[], object]],
    repeats: int = 7,
    warmup: int = 2,
    device: str = "cpu",
    first_round: int = 0,
) -> Dict[str, float]:
    """Median seconds of each call; ``warmup`` uncounted calls of each first, then
    ``repeats`` rounds, each calling every one once in an order rotated by one per round
    (round numbers start at ``first_round``). On CUDA the device is synchronised around each
    call."""
    sync = _synchronizer(device)
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for rep in range(repeats):
        shift = (first_round + rep) % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            t0 = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.no_grad()
def latency_samples(
    models: Mapping[str, nn.Module],
    variants: Sequence[Variant],
    batches: Sequence[List[dict]],
    repeats: int = 3,
    warmup: int = 2,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[str, List[float]]:
    """Seconds of each whole ``model(batch)`` call per variant: ``repeats`` passes over
    ``batches``, each batch once per pass and variant, the variants called one after another
    on the same batch (in an order rotated by one per round); ``warmup`` uncounted calls per
    variant first. Entry i of every list is the same round (pass and batch), so that
    variants compare call by call (:func:`turbo.benchmark.report.relative_latency`). ``progress`` is
    called with the number of passes done."""
    device = str(next(next(iter(models.values())).parameters()).device)
    calls = {}
    for v in variants:
        model, heads = models[v.model], turbo_heads_of(models[v.model])

        def call(batch, model=model, heads=heads, params=v.params):
            with heads.turbo_params(params):
                return model(batch)

        calls[v.name] = call
    for v in variants:
        for b in list(batches)[: max(warmup, 0)]:
            calls[v.name](b)
    times: Dict[str, List[float]] = {v.name: [] for v in variants}
    for rep in range(repeats):
        for bi, batch in enumerate(batches):
            t = time_calls(
                {v.name: (lambda c=calls[v.name], b=batch: c(b)) for v in variants},
                repeats=1,
                warmup=0,
                device=device,
                first_round=rep * len(batches) + bi,
            )
            for name, s in t.items():
                times[name].append(s)
        if progress is not None:
            progress(rep + 1)
    return times


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def peak_extra_memory_mib(fn: Callable[[], object], device: str = "cpu") -> float:
    """Peak memory (MiB) that one call of ``fn`` adds: ``max_memory_allocated`` on CUDA; on
    CPU (Linux) the peak resident size, reset first (``clear_refs``), minus the resident size
    before the call. Run it in a fresh process for a clean reading."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size to the current one
    base = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - base) / 1024
