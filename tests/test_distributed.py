"""Multi-process and multi-machine evaluation: ``projects/turbo/train_net.py --eval-only``
through ``detectron2.engine.launch`` on CPU (gloo), run as real subprocesses. Two processes
on one machine, and two single-process "machines" on loopback, must give exactly the
detections and the box / mask AP of one process, with and without test-time augmentation."""

import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from detectron2.checkpoint import DetectionCheckpointer

from turbo.build import get_turbo_cfg
from turbo.datasets import ensure_shapes, register_tiny_shapes

from helpers import CONFIGS, build

ROOT = os.path.dirname(CONFIGS)


def test_gloo_backend_available():
    """Multi-process evaluation on CPU needs torch.distributed's gloo backend: fail, not skip."""
    assert dist.is_available() and dist.is_gloo_available(), (
        "this torch build has no gloo backend for torch.distributed"
    )


TRAIN_NET = os.path.join(ROOT, "projects", "turbo", "train_net.py")
CONFIG = os.path.join(CONFIGS, "shapes", "turbo_mask_rcnn_R18_FPN.yaml")
TIMEOUT_S = 240  # per launch; one takes 10-40 s on a busy 2-core machine
DATASET = "shapes_tiny"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint(path: str) -> str:
    """Random weights, made informative enough for a non-zero AP on the tiny shapes: the
    proposals are the anchors (zero RPN deltas), the boxes are the proposals (zero box
    deltas), every class is equally likely and the masks are mostly foreground."""
    cfg = get_turbo_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    model = build(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "anchor_deltas" in name or "bbox_pred" in name or "cls_score" in name:
                p.zero_()
            elif "mask_head.predictor" in name:
                p.mul_(0.1) if p.dim() > 1 else p.add_(2.0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    DetectionCheckpointer(model, save_dir=os.path.dirname(path)).save(
        os.path.splitext(os.path.basename(path))[0]
    )
    return path


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    data = root / "data"
    # Generate the dataset train_net registers lazily as shapes_tiny (same parameters), so
    # that the workers find it on disk instead of racing to make it.
    defaults = {k: v.default for k, v in inspect.signature(register_tiny_shapes).parameters.items()}
    assert defaults["name"] == DATASET
    ensure_shapes(
        DATASET, defaults["num_images"], defaults["seed"], defaults["image_size"], root=str(data)
    )
    env = dict(os.environ)
    env.update(
        {
            "TURBO_DATASETS": str(data),
            # launch() picks NCCL whenever CUDA is visible; these runs are about CPU / gloo
            "CUDA_VISIBLE_DEVICES": "",
            # the same arithmetic in every process, and no oversubscribed cores
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    weights = _checkpoint(str(root / "weights" / "model.pth"))
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        weights,
        "DATASETS.TEST",
        f"('{DATASET}',)",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        # anchors of the tiny objects' sizes (in the 4x upscaled test images)
        "MODEL.ANCHOR_GENERATOR.SIZES",
        "[[32], [48], [64], [96]]",
        "TEST.AUG.ENABLED",
        "True",
        "TEST.AUG.MIN_SIZES",
        "(192, 256)",
        "TEST.AUG.MAX_SIZE",
        "512",
        "TEST.AUG.FLIP",
        "True",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SEED",
        "7",
    ]
    return {"root": root, "env": env, "opts": opts}


def _launch(spec, cmd, out):
    """Runs ``cmd`` in a session of its own (so that it and the workers it spawns can be
    killed together), its output in ``out/stdout.txt``; returns (process, out, log path)."""
    out.mkdir()
    log = out / "stdout.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=spec["env"],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, out, log


def _start(spec, name, flags, opts=()):
    """Starts ``train_net.py --eval-only`` in a session of its own (so that it and the
    workers it spawns can be killed together); returns (process, output dir, log path)."""
    out = spec["root"] / name
    cmd = (
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, "--eval-only"]
        + flags
        + spec["opts"]
        + list(opts)
        + ["OUTPUT_DIR", str(out)]
    )
    return _launch(spec, cmd, out)


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group started for this launch
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _wait(runs, timeout=TIMEOUT_S):
    """Waits for every run to exit 0; on the first failure or at the timeout, kills every
    run's process group and fails with the end of their output."""
    deadline = time.monotonic() + timeout
    failure = None
    while failure is None:
        codes = [proc.poll() for proc, _, _ in runs]
        if all(c == 0 for c in codes):
            return
        if any(c not in (None, 0) for c in codes):
            failure = f"exit codes {codes}"
        elif time.monotonic() > deadline:
            failure = f"timeout after {timeout} s"
        else:
            time.sleep(0.5)
    for proc, _, _ in runs:
        _kill(proc)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for _, _, log in runs)
    pytest.fail(f"train_net.py failed ({failure}):\n{tails}")


def _results(out, tta=True):
    """(AP blocks, detections): the ``copypaste`` AP lines of the rank-0 log in order (bbox,
    segm, then those under TTA) as printed (strings, so that "nan" == "nan"), and the
    detections of each evaluation (results json), sorted."""
    log = (out / "log.txt").read_text()
    blocks = re.findall(
        r"copypaste: Task: (\w+)\n.*copypaste: ([\w,]+)\n.*copypaste: ([\d.,na]+)", log
    )
    aps = [(task, dict(zip(keys.split(","), values.split(",")))) for task, keys, values in blocks]
    dets = {}
    for folder in ("inference", "inference_TTA") if tta else ("inference",):
        with open(out / folder / DATASET / "coco_instances_results.json") as f:
            dets[folder] = sorted(json.dumps(d, sort_keys=True) for d in json.load(f))
    return aps, dets


@pytest.fixture(scope="module")
def one_process(spec):
    run = _start(spec, "one_process", [])
    _wait([run])
    aps, dets = _results(run[1])
    assert [task for task, _ in aps] == ["bbox", "segm", "bbox", "segm"]  # plain, then TTA
    for task, ap in aps:
        assert 0 <= float(ap["AP"]) <= float(ap["AP50"]) <= 100, (task, ap)
    # non-zero, so that equal AP means something (TTA's averaged masks score 0 segm AP here)
    assert all(float(ap["AP50"]) > 0 for _, ap in aps[:3]), aps
    assert len(dets["inference"]) > 0 and len(dets["inference_TTA"]) > 0
    return aps, dets


def test_two_processes_equal_one(spec, one_process):
    run = _start(spec, "two_processes", ["--num-gpus", "2", "--dist-url", "auto"])
    _wait([run])
    assert (run[1] / "log.txt.rank1").is_file()  # a second process did take part
    aps, dets = _results(run[1])
    assert aps == one_process[0]
    assert dets == one_process[1]


def test_two_machines_equal_one(spec, one_process):
    """Two launches, one process each, meeting at rank 0's address like two machines would
    (without TTA: the test above covers it, and this keeps the run short)."""
    url = f"tcp://127.0.0.1:{_free_port()}"
    runs = [
        _start(
            spec,
            f"machine{rank}",
            [
                "--num-gpus",
                "1",
                "--num-machines",
                "2",
                "--machine-rank",
                str(rank),
                "--dist-url",
                url,
            ],
            ["TEST.AUG.ENABLED", "False"],
        )
        for rank in (0, 1)
    ]
    _wait(runs)
    assert (runs[1][1] / "log.txt.rank1").is_file()
    aps, dets = _results(runs[0][1], tta=False)
    assert aps == one_process[0][:2]
    assert dets == {"inference": one_process[1]["inference"]}


LAZY_NET = os.path.join(ROOT, "projects", "turbo", "lazyconfig_train_net.py")
LAZY_CONFIG = os.path.join(CONFIGS, "shapes", "turbo_mask_rcnn_R18_FPN.py")


def _start_lazy(spec, name, flags):
    """``lazyconfig_train_net.py --eval-only`` of the shipped shapes checkpoint on the tiny
    dataset, in a session of its own; returns (process, output dir, log path)."""
    out = spec["root"] / name
    cmd = [
        sys.executable,
        LAZY_NET,
        "--config-file",
        LAZY_CONFIG,
        "--eval-only",
        *flags,
        f"dataloader.test.dataset.names={DATASET}",
        "dataloader.test.num_workers=0",
        f"train.output_dir={out}",
    ]
    return _launch(spec, cmd, out)


def test_lazyconfig_two_processes_equal_one(spec):
    runs = [
        _start_lazy(spec, "lazy_one", []),
        _start_lazy(spec, "lazy_two", ["--num-gpus", "2", "--dist-url", "auto"]),
    ]
    _wait(runs)
    assert (runs[1][1] / "log.txt.rank1").is_file()  # a second process did take part
    (aps_one, dets_one), (aps_two, dets_two) = (_results(out, tta=False) for _, out, _ in runs)
    assert [task for task, _ in aps_one] == ["bbox", "segm"]
    assert float(aps_one[0][1]["AP50"]) > 20  # the shipped checkpoint: a real AP
    assert aps_two == aps_one
    assert dets_two == dets_one
