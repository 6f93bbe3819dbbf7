"""turbo.benchmark.stage_profile: the stages it times are the model's inference, in order, and
its tables add up; scripts/stage_profile.py runs end to end."""

import copy
import os

import pytest
import torch

from turbo.benchmark.stage_profile import (
    BASELINE_STAGES,
    TURBO_STAGES,
    baseline_stages,
    extra_time_split,
    profile_stages,
    profile_table,
    turbo_stages,
)

from helpers import assert_same_instances, build, make_images, tiny_cfg

HEADS = ["TurboROIHeads", "TurboCascadeROIHeads"]
# the default, the rank gate, two cycles with Maskness of both masks, and dropped empty masks
PARAMS = [
    {},
    {"repredict_topk": 2},
    {"num_iters": 2, "maskness_source": "both"},
    {"empty_mask": "drop"},
]


def _model(head):
    return build(tiny_cfg(head, **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.01}))


@pytest.mark.parametrize("changes", PARAMS)
@pytest.mark.parametrize("head", HEADS)
def test_turbo_stages_are_the_models_inference(head, changes):
    model = _model(head)
    images = make_images()
    with model.roi_heads.turbo_params(**changes) as p:
        with torch.no_grad():
            want = model(copy.deepcopy(images))
        got = turbo_stages(model, copy.deepcopy(images), p)
    assert sum(len(w["instances"]) for w in want) > 3
    for w, g in zip(want, got):
        assert_same_instances(w["instances"], g["instances"])


@pytest.mark.parametrize("head", HEADS)
def test_baseline_stages_are_detectron2s(head):
    model = _model(head)
    images = make_images()
    with model.roi_heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
        with torch.no_grad():
            want = model(copy.deepcopy(images))
    got = baseline_stages(model, copy.deepcopy(images))
    assert sum(len(w["instances"]) for w in want) > 3
    for w, g in zip(want, got):
        assert_same_instances(w["instances"], g["instances"])


def test_turbo_stages_need_soft_nms_and_cycles():
    model = _model("TurboROIHeads")
    with pytest.raises(ValueError, match="both must be on"):
        turbo_stages(model, make_images(), model.roi_heads.turbo.replace(num_iters=0))


def test_profile_adds_up():
    model = _model("TurboROIHeads")
    batches = [[x] for x in make_images()]
    result = profile_stages(model, batches, repeats=1, warmup=0)
    assert set(BASELINE_STAGES) <= set(result["baseline"])
    assert set(TURBO_STAGES) <= set(result["turbo"])
    for kind in ("baseline", "turbo"):
        assert all(v >= 0 for v in result[kind].values())
        assert result[kind]["masked dets/img"] >= result[kind]["dets/img"] > 0
    assert result["ratio"]["whole call"] > 0
    split = dict(extra_time_split(result))
    total = split.pop("extra time, all")
    want = sum(result["turbo"][s] for s in TURBO_STAGES) - sum(
        result["baseline"][s] for s in BASELINE_STAGES
    )
    assert abs(total - want) < 1e-9 and abs(sum(split.values()) - total) < 1e-9
    table = profile_table(result)
    for s in TURBO_STAGES:
        assert f"| {s}" in table
    assert "Mask head per detection" in table


def test_stage_profile_script(tmp_path):
    from test_scripts import SCRIPTS, _run

    out = tmp_path / "profile.md"
    _run(
        [
            os.path.join(SCRIPTS, "stage_profile.py"),
            "--models",
            "mask_rcnn",
            "--dataset",
            "shapes_tiny",
            "--images",
            "1",
            "--repeats",
            "1",
            "--output",
            str(out),
        ],
        tmp_path,
    )
    text = out.read_text()
    assert text.startswith("`python scripts/stage_profile.py --models mask_rcnn")
    assert "## Mask R-CNN" in text and "| mask head: re-prediction |" in text
