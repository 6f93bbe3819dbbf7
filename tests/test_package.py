"""The package as a user gets it: a non-editable install (``pip install .``) run from another
directory, the README's quick start on it, one version string, a licence, and an import that
changes no global state."""

import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.modeling import build_model
from PIL import Image

import turbo
from turbo.benchmark.synthetic import zero_box_regression

from helpers import randomize_heads

README = os.path.join(ROOT, "README.md")


def quick_start_blocks():
    """The Python code blocks of the README's "Quick start" section."""
    with open(README) as f:
        text = f.read()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def model_zoo_configs(code: str):
    """(config path, trained) of each ``model_zoo.get_config`` call in ``code``."""
    return re.findall(r'model_zoo\.get_config\("([^"]+)", trained=(True|False)\)', code)


def cached_path(cache: str, url: str) -> str:
    """Where iopath's URL handler keeps ``url`` under ``$FVCORE_CACHE`` (it downloads only
    what is not there)."""
    return os.path.join(cache, url.split("://", 1)[1].split("/", 1)[1])


def write_zoo_checkpoint(config: str, path: str) -> None:
    """A randomly initialised checkpoint of the model-zoo ``config`` in the model zoo's own
    format (a pickled dict of NumPy arrays under "model"), with non-trivial heads so that the
    model detects something: what the quick start would download, made here."""
    torch.manual_seed(0)
    cfg = model_zoo.get_config(config)
    cfg_model = cfg.model if hasattr(cfg, "model") else None
    if cfg_model is not None:
        model = instantiate(cfg_model)
    else:
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg)
    zero_box_regression(randomize_heads(model))
    state = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "turbo tests"}, f)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """This checkout installed with ``pip install --target`` (a non-editable install, built
    as a wheel), and a working directory outside the checkout."""
    target = tmp_path_factory.mktemp("site")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), ROOT],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
    )
    assert out.returncode == 0, out.stderr
    return target, tmp_path_factory.mktemp("elsewhere")


def run_installed(installed, code: str, **env):
    target, cwd = installed
    environ = {**os.environ, "PYTHONPATH": str(target), "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=environ
    )


def test_the_installed_copy_is_used_and_has_one_version(installed):
    target, _ = installed
    out = run_installed(
        installed,
        "import json, importlib.metadata, turbo, turbo.benchmark.reference_models as r\n"
        "try:\n"
        "    r.reference_model('mask_rcnn')\n"
        "    missing = ''\n"
        "except FileNotFoundError as e:\n"
        "    missing = str(e)\n"
        "print(json.dumps([turbo.__file__, turbo.__version__,"
        " importlib.metadata.version('turbo'), missing]))",
    )
    assert out.returncode == 0, out.stderr
    path, version, dist_version, missing = json.loads(out.stdout.strip().splitlines()[-1])
    assert path.startswith(str(target))
    assert version == dist_version == turbo.__version__
    # the harness's reference models live in a checkout: an installed copy says so
    assert "source checkout" in missing


def test_quick_start_runs_on_the_installed_package(installed, tmp_path):
    """Every Python block of the README's quick start, as written, against the non-editable
    install, from another directory; the model-zoo checkpoints it names are made here and
    put where Detectron2's loader finds downloaded files."""
    blocks = quick_start_blocks()
    assert len(blocks) == 3, "the quick start has its yacs, LazyConfig and own-heads blocks"
    cache = str(tmp_path / "cache")
    for config, trained in model_zoo_configs("".join(blocks)):
        assert trained == "True"
        write_zoo_checkpoint(config, cached_path(cache, model_zoo.get_checkpoint_url(config)))
    _, cwd = installed
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(cwd / "input.jpg")
    for code in blocks:
        out = run_installed(installed, code + "\nprint('QUICK START OK')", FVCORE_CACHE=cache)
        assert out.returncode == 0, f"{code}\n{out.stderr[-3000:]}"
        assert "QUICK START OK" in out.stdout


def test_import_changes_no_warning_filter_or_logger():
    """Importing turbo, every library module and the benchmark's modules that tests share
    installs none of the known-warning filters and no log filter; silence_known_warnings()
    installs them (the program's choice)."""
    code = """
import json, logging, warnings
import turbo, turbo.build, turbo.launch, turbo.lazy, turbo.predictor, turbo.tta
import turbo.visualization
import turbo.benchmark.host_syncs, turbo.benchmark.mask_paste, turbo.benchmark.synthetic
from turbo.third_party_warnings import KNOWN_LOG_RECORDS, KNOWN_WARNINGS, silence_known_warnings

def state():
    known = {m for _, m, _ in KNOWN_WARNINGS}
    filters = [f for f in warnings.filters if f[1] is not None and f[1].pattern in known]
    loggers = [n for n, _ in KNOWN_LOG_RECORDS if logging.getLogger(n).filters]
    return [len(filters), len(loggers)]

before = state()
silence_known_warnings()
print(json.dumps([before, state()]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    from turbo.third_party_warnings import KNOWN_LOG_RECORDS, KNOWN_WARNINGS

    assert before == [0, 0]
    assert after == [len(KNOWN_WARNINGS), len(KNOWN_LOG_RECORDS)]


def test_licence_and_version_have_one_home():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert "Apache License" in f.read(2000)
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup_py = f.read()
    assert "version=version()" in setup_py and not re.search(r"version=\"\d", setup_py)
