"""The benchmark scripts run end to end on a tiny dataset and write what the README says.

Timings are never asserted; the tests check that each script runs the variants it claims
(rows, parameters), that their accuracy columns are real COCO numbers, and that variants
that must agree do (Soft-NMS's early stop does not change a detection).
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")


def _run(args, tmp_path, timeout=600):
    env = dict(os.environ, TURBO_DATASETS=str(tmp_path / "data"), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_benchmark_script(tmp_path):
    out_dir = tmp_path / "bench"
    stdout = _run([os.path.join(SCRIPTS, "benchmark.py"), "--dataset", "shapes_tiny",
                   "--cycles", "1", "2", "--repredict-iou", "0", "--repredict-min-score", "0.3",
                   "--latency-images", "1", "--repeats", "1", "--pictures", "1",
                   "--output-dir", str(out_dir)], tmp_path)
    with open(out_dir / "benchmark.json") as f:
        res = json.load(f)
    names = [r["name"] for r in res["rows"]]
    for want in ("baseline", "+ Soft-NMS", "+ Turbo", "+ Turbo + Soft-NMS",
                 "+ Turbo x2 + Soft-NMS", "+ Turbo (re-predict IoU<0) + Soft-NMS",
                 "+ Turbo (re-predict score>=0.3, others resampled) + Soft-NMS",
                 "Cascade: baseline", "Cascade: + Turbo + Soft-NMS"):
        assert want in names, (want, names)
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["baseline"]["params"]["num_iters"] == 0
    assert not rows["baseline"]["params"]["soft_nms"]
    gated = rows["+ Turbo (re-predict score>=0.3, others resampled) + Soft-NMS"]["params"]
    assert gated["repredict_min_score"] == 0.3 and gated["resample_masks"]
    for r in res["rows"]:
        for task in ("bbox", "segm"):
            assert 0.0 <= r[task]["AP"] <= r[task]["AP50"] <= 100.0, r
        assert r["latency_s"] > 0
    # the shipped checkpoints detect the tiny shapes: a non-trivial AP, more with Turbo
    assert rows["baseline"]["bbox"]["AP50"] > 20
    for f in ("benchmark.md", "ap_vs_cycles_and_latency.png", "examples.png"):
        assert (out_dir / f).stat().st_size > 0
    assert "| + Turbo + Soft-NMS |" in (out_dir / "benchmark.md").read_text()
    assert "| variant | box AP | mask AP |" in stdout


def test_bench_ops_script(tmp_path):
    stdout = _run([os.path.join(SCRIPTS, "bench_ops.py"), "--device", "cpu", "--repeats", "1",
                   "--e2e-repeats", "1", "--skip-e2e", "--shapes-dataset", "shapes_tiny"],
                  tmp_path)
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| target | measured | ratio |"
    rows = {line.split(" | ")[0][2:]: line for line in table[1:]}
    assert any(k.startswith("mask_boxes, 100 dets") for k in rows)
    # mask_boxes agrees with Detectron2's paste: 0 px difference, same empty masks
    agree = next(v for k, v in rows.items() if k.startswith("mask_boxes vs full paste"))
    assert "| 0 px, True |" in agree
    assert any(k.startswith("Soft-NMS, same candidates: top 100 / every step") for k in rows)
    # targets 4 and 5 on the shipped shapes checkpoint: the fast setting's share of the gain
    # is printed, and the default turbo path makes no host sync
    assert any(k.startswith("shapes_tiny Mask R-CNN") for k in rows)
    assert "of the gain (target >= 90%)" in next(
        v for k, v in rows.items() if k.startswith("shapes box / mask AP"))
    syncs = next(v for k, v in rows.items() if k.startswith("host syncs in the turbo cycles"))
    full, fast = syncs.split(" | ")[1].split(" / ")
    assert int(full) == 0 and int(fast) > 0


@pytest.mark.parametrize("script", ["benchmark.py", "bench_ops.py", "tune.py"])
def test_scripts_have_help(script, tmp_path):
    assert "usage" in _run([os.path.join(SCRIPTS, script), "--help"], tmp_path, timeout=120)
