"""Shared test configuration. Helpers live in ``tests/helpers.py``, and the synthetic
workloads, paste reference and host-sync counter the benchmark shares in ``turbo.benchmark``;
this file only sets up the run: one thread, the known third-party warnings filtered (pytest's
``filterwarnings``, from ``turbo.third_party_warnings``), and the ``images`` fixture."""

import importlib.util
import os


def _known_warnings():
    """``turbo.third_party_warnings`` (standard library only), loaded from the installed
    package without importing ``turbo``, whose import imports Detectron2, which warns while
    importing."""
    package = importlib.util.find_spec("turbo")
    if package is None:
        raise ImportError("turbo is not installed: run scripts/setup_env.py (README.md, Install)")
    path = os.path.join(package.submodule_search_locations[0], "third_party_warnings.py")
    spec = importlib.util.spec_from_file_location("_turbo_known_warnings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KNOWN_WARNINGS = _known_warnings()
KNOWN_WARNINGS.silence_known_warnings()  # for this test process, before Detectron2 is imported

import detectron2  # noqa: E402, F401  (a missing Detectron2 must fail the run loudly, not skip)
import pytest  # noqa: E402
import torch  # noqa: E402

import turbo  # noqa: E402, F401  (registers the heads)

from helpers import make_images  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One thread: the tiny models are dominated by per-op overhead, which extra threads on a
# small (or busy) machine only add to.
torch.set_num_threads(1)


def pytest_configure(config):
    for line in KNOWN_WARNINGS.filterwarnings_lines():
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture
def images():
    return make_images()


def load_entry_point(name: str):
    """The module of ``projects/turbo/<name>.py`` (entry points are scripts, not a package)."""
    path = os.path.join(ROOT, "projects", "turbo", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def entry_point():
    return load_entry_point
