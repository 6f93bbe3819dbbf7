"""Known warnings of PyTorch and Detectron2 that tell a turbo user nothing, silenced precisely.

Each entry names one warning by category, the start of its message and the module it is
attributed to; nothing else is filtered, and no warning of turbo's own code. Importing turbo
installs nothing: programs call :func:`silence_known_warnings`, and the test suite adds the
same entries to pytest's ``filterwarnings`` (``tests/conftest.py``). Detectron2 warns while it
is imported, and importing any module of turbo imports it, so the entry points and scripts run
this file (standard library only) by its path before any import of theirs::

    runpy.run_path(
        importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
    )["silence_known_warnings"]()
"""

from __future__ import annotations

import logging
import warnings
from typing import List, Tuple, Type

__all__ = ["KNOWN_WARNINGS", "KNOWN_LOG_RECORDS", "silence_known_warnings", "filterwarnings_lines"]

# (category, regular expression matching the start of the message, module it is attributed to);
# no colon in the expressions (pytest's filter lines are colon-separated): "." stands for one.
KNOWN_WARNINGS: Tuple[Tuple[Type[Warning], str, str], ...] = (
    # Detectron2 scripts a few functions with torch.jit.script when it is imported.
    (FutureWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit\._script$"),
    # Detectron2 calls torch.meshgrid without ``indexing`` (anchors, RoI sampling).
    (UserWarning, r"torch\.meshgrid. in an upcoming release", r"torch\.functional$"),
    # Detectron2's model zoo imports pkg_resources (setuptools < 81 still has it); the warning
    # is attributed to the importer: the model zoo, or LazyConfig's import hook.
    (UserWarning, r"pkg_resources is deprecated as an API", r"detectron2\.(model_zoo|config)"),
    # pycocotools (and Detectron2's COCO evaluator through it) pass copy=False to NumPy 2's
    # __array__ protocol, which its RLE objects do not implement; Detectron2's semantic
    # evaluator does the same to tensors (np.array of a torch tensor).
    (
        DeprecationWarning,
        r"__array__ implementation doesn't accept a copy keyword",
        r"(pycocotools\.mask|detectron2\.evaluation\.(coco|sem_seg)_evaluation)$",
    ),
    # Detectron2's ViT and MViT blocks import DropPath and Mlp from timm's old module path.
    (FutureWarning, r"Importing from timm\.models\.layers is deprecated", r"timm\.models\.layers"),
    # PyTorch deprecates TorchScript and its tracing ONNX exporter, which are what Detectron2's
    # deployment (and turbo.export) uses; the exporter's notice is attributed to its caller.
    (FutureWarning, r"`torch\.jit\.(trace|trace_method|save|load)` is deprecated", r"torch\.jit\."),
    (
        DeprecationWarning,
        r"You are using the legacy TorchScript-based ONNX export",
        r"turbo\.export$",
    ),
    (DeprecationWarning, r"The feature will be removed\. Please remove usage", r"torch\.onnx\."),
    # The ONNX exporter's notes on graphs it exports correctly (no negative index is used).
    (UserWarning, r"Exporting aten..index operator of advanced indexing", r"torch\.onnx\."),
    (UserWarning, r"Constant folding - Only steps=1 can be constant folded", r"torch\.onnx\."),
    # Detectron2's data mapper turns read-only NumPy masks into tensors it never writes.
    (UserWarning, r"The given NumPy array is not writable", r"detectron2\.data\.detection_utils$"),
)
# (logger, start of the message): notices PyTorch logs rather than warns.
KNOWN_LOG_RECORDS: Tuple[Tuple[str, str], ...] = (
    # torch.fx logs this once when Detectron2's code asks whether it is being traced.
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true"),
    # PyTorch's CUDA build on a machine without CUDA, when Detectron2 imports cpp_extension.
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
)


class _DropKnownRecords(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_known_warnings() -> None:
    """Install the filters for :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_RECORDS` (idempotent)."""
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, prefix in KNOWN_LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownRecords) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropKnownRecords(prefix))


def filterwarnings_lines() -> List[str]:
    """:data:`KNOWN_WARNINGS` as pytest ``filterwarnings`` lines."""
    return [
        f"ignore:{message}:{category.__name__}:{module}"
        for category, message, module in KNOWN_WARNINGS
    ]
