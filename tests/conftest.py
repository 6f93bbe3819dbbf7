"""Shared test configuration. Helpers live in ``turbo.testing``; this file only sets up the
run: one thread, the known third-party warnings filtered as the package filters them, and the
``images`` fixture."""

import importlib.util
import os

import turbo  # noqa: F401  (registers the heads)
from turbo.testing import make_images
from turbo.third_party_warnings import filterwarnings_lines

import detectron2  # noqa: F401  (a missing Detectron2 must fail the run loudly, not skip)
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One thread: the tiny models are dominated by per-op overhead, which extra threads on a
# small (or busy) machine only add to.
torch.set_num_threads(1)


def pytest_configure(config):
    for line in filterwarnings_lines():
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
