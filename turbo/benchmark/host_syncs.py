"""A counter of host syncs: the calls that make the host wait for the device (on CUDA),
recorded with the profiler on any device. Needs only the installed package (no repository
files).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = ["SYNC_OPS", "count_host_syncs"]


# Operators that make the host wait for the device (on CUDA): reading a value (item, bool),
# outputs whose size depends on values (nonzero, boolean indexing, unique, masked_select,
# repeat_interleave without output_size: all call one of these inside, which the profiler
# records), bincount (reads the max), equal, and tensors made from host data (copied to the
# device without non_blocking).
SYNC_OPS = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::item",
        "aten::is_nonzero",
        "aten::nonzero",
        "aten::nonzero_numpy",
        "aten::argwhere",
        "aten::masked_select",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::unique_dim_consecutive",
        "aten::bincount",
        "aten::equal",
        "aten::allclose",
        "aten::lift_fresh",
    }
)
# Tensor methods that read device memory on the host without an operator the profiler sees
# on CPU tensors.
_SYNC_METHODS = ("tolist", "numpy", "cpu")
_MASK_HEAD = "turbo::mask_head"


def _inside(event, names) -> bool:
    """Whether an enclosing event of ``event`` is named in ``names``."""
    e = event.cpu_parent
    while e is not None:
        if e.name in names:
            return True
        e = e.cpu_parent
    return False


@contextlib.contextmanager
def count_host_syncs(heads: Optional[nn.Module]) -> Iterator[List[str]]:
    """Collects the host-sync calls made while the context is open (operator or
    ``Tensor.<method>`` names, filled when the context closes), leaving out those made inside
    the mask head (``heads.predict_masks``: Detectron2's pooler groups boxes by FPN level
    with ``nonzero``; ``heads`` None: nothing is left out). Works on CPU too: it records
    the calls that would make a CUDA host wait, each wait once (an operator called inside
    another sync operator is part of its wait).

    Not thread-safe: it patches ``torch.Tensor.tolist``/``numpy``/``cpu`` while open. The
    profiler sees the operators; the patched methods see host reads of CPU tensors, which
    call no operator.
    """
    found: List[str] = []
    depth = [0]
    predict_masks = heads.predict_masks if heads is not None else None
    # an instance's own predictor (as TTA sets one)
    shadowed = heads is not None and "predict_masks" in vars(heads)

    def mask_head(*args, **kwargs):
        depth[0] += 1
        try:
            with record_function(_MASK_HEAD):
                return predict_masks(*args, **kwargs)
        finally:
            depth[0] -= 1

    def spy(name, method):
        def wrapper(self, *args, **kwargs):
            if depth[0] == 0:
                found.append(f"Tensor.{name}")
            return method(self, *args, **kwargs)

        return wrapper

    methods = {name: getattr(torch.Tensor, name) for name in _SYNC_METHODS}
    if heads is not None:
        heads.predict_masks = mask_head
    try:
        for name, method in methods.items():
            setattr(torch.Tensor, name, spy(name, method))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            yield found
    finally:
        for name, method in methods.items():
            setattr(torch.Tensor, name, method)
        if shadowed:
            heads.predict_masks = predict_masks
        elif heads is not None:
            del heads.predict_masks  # back to the class's method
    # one wait per outermost sync operator: those inside another (``is_nonzero`` calls
    # ``item``, which calls ``_local_scalar_dense``) are part of its wait
    found.extend(
        e.name
        for e in prof.events()
        if e.name in SYNC_OPS and not _inside(e, SYNC_OPS | {_MASK_HEAD})
    )
