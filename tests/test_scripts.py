"""The scripts run end to end on a tiny dataset and write what the README says.

Timings are never asserted; the tests check that each script runs the variants it claims
(rows, parameters), that their accuracy columns are real COCO numbers, and that it is a thin
command line (no script imports another or edits ``sys.path``).
"""

import ast
import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")


def _run(args, tmp_path, timeout=600):
    env = dict(
        os.environ,
        TURBO_DATASETS=str(tmp_path / "data"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
    )
    out = subprocess.run(
        [sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_benchmark_script(tmp_path):
    out_dir = tmp_path / "bench"
    stdout = _run(
        [
            os.path.join(SCRIPTS, "benchmark.py"),
            "--dataset",
            "shapes_tiny",
            "--full",
            "--cycles",
            "2",
            "--latency-images",
            "1",
            "--repeats",
            "1",
            "--pictures",
            "1",
            "--score-pr",
            "0.5",
            "--output-dir",
            str(out_dir),
        ],
        tmp_path,
    )
    res = json.loads((out_dir / "benchmark.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    for want in (
        "baseline",
        "+ Soft-NMS",
        "+ Turbo",
        "+ Turbo + Soft-NMS (default)",
        "+ Turbo + Soft-NMS, published recipe",
        "default, num_iters=2",
        "published + repredict_topk=10",
        "published + maskness_source=both",
        "Cascade: baseline",
        "Cascade: + Turbo + Soft-NMS (default)",
    ):
        assert want in rows, (want, list(rows))
    assert rows["baseline"]["params"]["num_iters"] == 0
    assert not rows["baseline"]["params"]["soft_nms"]["enabled"]
    assert rows["+ Turbo + Soft-NMS (default)"]["params"]["repredict_topk"] == 20
    assert rows["+ Turbo + Soft-NMS, published recipe"]["params"]["repredict_topk"] == 0
    assert rows["default, num_iters=2"]["params"]["num_iters"] == 2
    for r in res["rows"]:
        for task in ("bbox", "segm"):
            assert 0.0 <= r[task]["AP"] <= r[task]["AP50"] <= 100.0, r
        assert r["latency_s"] > 0
    # the shipped checkpoints detect the tiny shapes: a non-trivial AP
    assert rows["baseline"]["bbox"]["AP50"] > 20
    for f in (
        "benchmark.md",
        "benchmark.log",
        "ap_vs_latency.png",
        "ap_vs_cycles.png",
        "examples.png",
    ):
        assert (out_dir / f).stat().st_size > 0
    md = (out_dir / "benchmark.md").read_text()
    assert "| + Turbo + Soft-NMS (default) |" in md
    # precision / recall above a score, from pycocotools' matching
    assert "| variant | box P / R @ 0.5 | mask P / R @ 0.5 |" in md
    for r in res["rows"]:
        for task in ("bbox", "segm"):
            precision, recall = r["score_pr"][task]["0.5"]
            assert 0 <= precision <= 100 and 0 <= recall <= 100
        # each variant but a baseline: its difference from the baseline's spread over images
        is_baseline = r["name"] in ("baseline", "Cascade: baseline")
        assert ("score_pr_spread" in r) != is_baseline, r["name"]
        if not is_baseline:
            assert all(sd >= 0 for t in ("bbox", "segm") for sd in r["score_pr_spread"][t]["0.5"])
    assert "Minus the model's baseline, in points" in md
    assert "| + Turbo + Soft-NMS (default) | " in md.split("Minus the model's baseline")[1]
    assert "| variant | box AP | mask AP |" in stdout
    log = (out_dir / "benchmark.log").read_text()
    assert "accuracy: 4/4 images (100%)" in log and "left" in log


def test_benchmark_script_untimed(tmp_path):
    """--latency-images 0: accuracy and precision / recall alone, the latency columns n/a."""
    out_dir = tmp_path / "bench"
    _run(
        [
            os.path.join(SCRIPTS, "benchmark.py"),
            "--dataset",
            "shapes_tiny",
            "--reference",
            "mask_rcnn",
            "--latency-images",
            "0",
            "--pictures",
            "0",
            "--score-pr",
            "0.5",
            "--output-dir",
            str(out_dir),
        ],
        tmp_path,
    )
    res = json.loads((out_dir / "benchmark.json").read_text())
    assert all(r["latency_s"] is None and r["latency_x_baseline"] is None for r in res["rows"])
    md = (out_dir / "benchmark.md").read_text()
    assert "latency: not timed (--latency-images 0)" in md
    assert "| baseline |" in md and "n/a" in md
    assert not (out_dir / "ap_vs_latency.png").exists()


def test_bench_ops_script(tmp_path):
    stdout = _run(
        [
            os.path.join(SCRIPTS, "bench_ops.py"),
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--e2e-repeats",
            "1",
            "--skip-e2e",
            "--shapes-dataset",
            "shapes_tiny",
        ],
        tmp_path,
    )
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| part | measured | ratio |"
    rows = {line.split(" | ")[0][2:]: line for line in table[1:]}
    for m in ("28x28", "224x224"):
        assert any(k.startswith(f"mask_boxes, 100 dets, {m} masks") for k in rows)
        # mask_boxes agrees with Detectron2's whole-image paste: 0 px, the same rows found
        agree = next(
            v
            for k, v in rows.items()
            if k.startswith(f"mask_boxes, {m}, against the whole-image paste")
        )
        assert "| 0 px, True |" in agree
    assert any(k.startswith("Soft-NMS, same candidates: top 100 / every step") for k in rows)
    assert sum(k.startswith("Soft-NMS, ") and "1,203 classes, top 300" in k for k in rows) == 3
    syncs = {k: int(v.split(" | ")[1]) for k, v in rows.items() if k.startswith("host syncs")}
    cycle = {k: n for k, n in syncs.items() if "the turbo cycle" in k}
    # the published cycle makes the host wait for the device once, to read which detections
    # pass the score threshold; the default once more, to read how many its score gate keeps
    published = next(n for k, n in cycle.items() if "published" in k)
    default = next(n for k, n in cycle.items() if "default" in k)
    assert (published, default, len(cycle)) == (1, 2, 2), syncs
    assert any("Soft-NMS detection" in k for k in syncs), syncs


def test_tune_script(tmp_path):
    out = tmp_path / "tune.md"
    _run(
        [
            os.path.join(SCRIPTS, "tune.py"),
            "--config-file",
            "configs/shapes/turbo_mask_rcnn_R18_FPN.yaml",
            "--weights",
            "checkpoints/shapes_mask_rcnn_R18_FPN.pth",
            "--dataset",
            "shapes_tiny",
            "--grid",
            "mechanisms",
            "--sweep",
            "maskness_source",
            "--base",
            "published",
            "--pairs",
            "repredict_topk=5,mask_edge=half_interior",
            "--score-pr",
            "0.5",
            "--output",
            str(out),
        ],
        tmp_path,
    )
    text = out.read_text()
    for row in (
        "| published |",
        "| published, maskness_source=both |",
        "| published, repredict_topk=5, mask_edge=half_interior |",
        "| Soft-NMS only |",
        "| variant | box P / R @ 0.5 | mask P / R @ 0.5 |",
    ):
        assert row in text, text


def test_crowds_script(tmp_path):
    """AP and latency by objects per image, end to end on the tiny shapes (buckets of 0-2 and
    3-19 objects), with the baseline, the default and one rank gate."""
    out = tmp_path / "crowds.md"
    _run(
        [
            os.path.join(SCRIPTS, "crowds.py"),
            "--config-file",
            "configs/shapes/turbo_mask_rcnn_R18_FPN.yaml",
            "--weights",
            "checkpoints/shapes_mask_rcnn_R18_FPN.pth",
            "--dataset",
            "shapes_tiny",
            "--buckets",
            "0",
            "3",
            "20",
            "--topk",
            "2",
            "--latency-images",
            "1",
            "--repeats",
            "1",
            "--output",
            str(out),
        ],
        tmp_path,
    )
    text = out.read_text()
    assert (
        "| variant | all: box AP / mask AP | 0-2 objects (" in text and "| 3-19 objects (" in text
    )
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert {"baseline", "default (repredict_topk=20)", "published recipe"} <= set(rows)
    assert "default, repredict_topk=2" in rows
    assert rows["baseline"].count(" / 1.00") >= 1  # the baseline's own latency ratio


def test_score_map_script(tmp_path):
    """The score maps fitted and measured end to end on two images per split: every row per
    model, the count-matched rows on the own map's and the maps per class's detections (the
    same AP), and a note per fitted map saying whether the config holds it."""
    out = tmp_path / "score_map.md"
    _run(
        [
            os.path.join(SCRIPTS, "score_map.py"),
            "--reference",
            "mask_rcnn",
            "cascade",
            "--max-images",
            "2",
            "--output",
            str(out),
        ],
        tmp_path,
    )
    text = out.read_text()
    # the cascade's config sets maps per class: a row of their own, followed by their
    # count-matched row (the same AP), its shared map another
    lines = [x.split(" | ") for x in text.splitlines() if x.startswith("| Cascade (shapes_val)")]
    cascade = {x[1] for x in lines}
    config_maps = (
        "default, the model's own maps per class (its config's; from 0.5 up, fitted on "
        "shapes_tune_large)"
    )
    assert config_maps in cascade
    at = [x[1] for x in lines].index(config_maps)
    assert "count" in lines[at + 1][1] and lines[at + 1][2:4] == lines[at][2:4]
    assert "default, one map for all classes (fitted on shapes_tune)" in cascade
    assert "default, the model's own score map" not in cascade
    assert "sets its maps per class instead" in text
    rows = {
        line.split(" | ")[1]: line.split(" | ")
        for line in text.splitlines()
        if line.startswith("| Mask R-CNN (shapes_val)")
    }
    own, matched = "default, the model's own score map", next(r for r in rows if "count" in r)
    assert {"baseline", "default, no score map", own, "tuned config, its own score map"} <= set(
        rows
    )
    assert rows[matched][2:4] == rows[own][2:4]  # box and mask AP: the same detections
    assert "MASK_RCNN_RECIPE.score_map" in text and "turbo_mask_rcnn_R18_FPN.yaml" in text


def test_device_agreement_script(tmp_path):
    """CPU against CPU (the comparison a GPU run makes against the CPU) end to end on two
    images: the baseline and default rows, every detection paired with its twin, no
    difference, the same COCO AP on both sides."""
    out = tmp_path / "agreement.md"
    _run(
        [
            os.path.join(SCRIPTS, "device_agreement.py"),
            "--device",
            "cpu",
            "--models",
            "mask_rcnn",
            "--images",
            "2",
            "--output",
            str(out),
        ],
        tmp_path,
    )
    text = out.read_text()
    assert text.startswith("`python scripts/device_agreement.py --device cpu")
    rows = [
        [c.strip() for c in line.split("|")[1:-1]]
        for line in text.splitlines()
        if line.startswith("| Mask R-CNN (shapes_val)")
    ]
    assert [r[1] for r in rows] == ["baseline", "default"]
    for _, _, box_ap, mask_ap, dets, paired, box_px, score, mask_iou in rows:
        cpu, dev = dets.split(" / ")
        assert int(cpu) == int(dev) == int(paired) > 0
        assert box_ap.split(" / ")[0] == box_ap.split(" / ")[1]
        assert mask_ap.split(" / ")[0] == mask_ap.split(" / ")[1]
        assert (float(box_px), float(score), float(mask_iou)) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "script",
    [
        "benchmark.py",
        "bench_ops.py",
        "device_agreement.py",
        "tune.py",
        "crowds.py",
        "panoptic_merge.py",
        "make_shapes.py",
        "export_checkpoint.py",
        "detectron2_tests.py",
        "update_docs.py",
        "fresh_clone.py",
        "score_map.py",
    ],
)
def test_scripts_have_help(script, tmp_path):
    assert "usage" in _run([os.path.join(SCRIPTS, script), "--help"], tmp_path, timeout=120)


@pytest.mark.parametrize(
    "path",
    sorted(glob.glob(os.path.join(SCRIPTS, "*.py")))
    + sorted(glob.glob(os.path.join(ROOT, "projects", "turbo", "*.py"))),
    ids=os.path.basename,
)
def test_scripts_are_thin(path):
    """No script imports another script or edits sys.path, and none calls a private
    function or method of the package."""
    tree = ast.parse(open(path).read())
    scripts = {
        os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(SCRIPTS, "*.py"))
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in scripts, node.module
            assert not any(a.name.startswith("_") for a in node.names), node.module
        elif isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] in scripts for a in node.names)
        elif isinstance(node, ast.Attribute):
            assert not (
                node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys"
            ), "sys.path"


ENTRY_POINTS = sorted(
    p
    for p in glob.glob(os.path.join(SCRIPTS, "*.py"))
    + glob.glob(os.path.join(ROOT, "projects", "turbo", "*.py"))
    if os.path.basename(p) not in ("setup_env.py", "fresh_clone.py")  # standard library only
)


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=os.path.basename)
def test_entry_points_start_quiet(path, tmp_path):
    """No third-party warning before a program's own output: the entry points install the
    known filters before they import Detectron2 (the library installs none)."""
    out = subprocess.run(
        [sys.executable, path, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage" in out.stdout
    assert "Warning" not in out.stderr, out.stderr[-3000:]
