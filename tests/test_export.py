"""Deployment through Detectron2's ``TracingAdapter`` (as ``tools/deploy/export_model.py
--export-method tracing`` does): a turbo model traced on one image gives, as TorchScript and
in onnxruntime, the eager outputs on other images of other sizes and detection counts (none
included, and more than the traced image had); a batch of several images is refused at trace
time; ``projects/turbo/export_model.py`` end to end."""

import io
import os

import onnx
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.export import TracingAdapter

from turbo.benchmark.reference_models import reference_model
from turbo.benchmark.variants import PUBLISHED
from turbo.build import load_model
from turbo.config import IDENTITY_MAP
from turbo.datasets import register_synthetic_datasets
from turbo.export import (
    OnnxModel,
    check_same_outputs,
    eager_outputs,
    export_onnx,
    trace,
)

# Detectron2's own code warns that some Python values become trace constants (they are the
# model's structure, the same for every input: the replays check it); turbo's code must not
# (a constant of its own is an error here). PyTorch's deprecation notices of tracing and of
# its ONNX exporter are known warnings (turbo.third_party_warnings)
pytestmark = [
    pytest.mark.filterwarnings("error::torch.jit.TracerWarning:turbo"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning:detectron2"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning:torch"),
]

OFF = {"num_iters": 0, "soft_nms": {"enabled": False}}


def _images():
    """Five (3, H, W) uint8 BGR images: three of shapes_val, one cropped (200x250) and one
    blank (no detection); then one enlarged (320x384)."""
    register_synthetic_datasets()
    dicts = DatasetCatalog.get("shapes_val")[:3]
    images = [
        torch.as_tensor(read_image(d["file_name"], format="BGR").transpose(2, 0, 1).copy())
        for d in dicts
    ]
    crop = images[1][:, 20:220, 0:250].contiguous()
    blank = torch.full_like(images[0], 128)
    big = torch.nn.functional.interpolate(images[2][None].float(), size=(320, 384))[0]
    return images + [crop, blank, big.round().clamp(0, 255).to(torch.uint8)]


@pytest.fixture(scope="module")
def images():
    return _images()


@pytest.fixture(scope="module")
def models():
    out = {}
    for name in ("mask_rcnn", "cascade"):
        _, config, weights = reference_model(name)
        out[name] = load_model(config, weights, "cpu")[1]
    return out


PATHS = {
    "soft_nms_alone": ("mask_rcnn", {"num_iters": 0}),
    "default": ("mask_rcnn", {}),
    "published": ("mask_rcnn", None),
    "cascade": ("cascade", {}),
}


def _params(model, changes):
    heads = model.roi_heads
    return heads.turbo_params(PUBLISHED) if changes is None else heads.turbo_params(**changes)


def _check_varied(expected, traced_on):
    """The check images differ from the traced one in size and in detection count, none and
    more than the traced image included."""
    counts = [len(x) for x in expected]
    assert 0 in counts
    assert max(counts) > traced_on
    assert len(set(counts)) >= 3


@pytest.mark.parametrize("path", list(PATHS))
def test_torchscript_replays_other_images_as_eager(models, images, path):
    name, changes = PATHS[path]
    model = models[name]
    with _params(model, changes):
        trace_on, others = images[2], images[:2] + images[3:]
        adapter, traced = trace(model, trace_on)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)  # as deployed: saved and loaded again
        buf.seek(0)
        loaded = torch.jit.load(buf)
        with torch.no_grad():
            actual = [adapter.outputs_schema(loaded(x))[0]["instances"] for x in others]
        # the deployed module called with autograd on replays the same
        with_grad = [adapter.outputs_schema(loaded(x))[0]["instances"] for x in others[:2]]
        expected = [eager_outputs(model, x) for x in others]
        traced_count = len(eager_outputs(model, trace_on))
    _check_varied(expected, traced_count)
    check_same_outputs(expected, actual, atol=1e-4)
    check_same_outputs(actual[:2], with_grad, atol=0.0)
    if changes != {"num_iters": 0}:
        assert all(x.has("maskness") for x in actual)


@pytest.mark.parametrize("path", list(PATHS))
def test_onnx_in_onnxruntime_gives_eager_outputs(models, images, path):
    name, changes = PATHS[path]
    model = models[name]
    with _params(model, changes):
        buf = io.BytesIO()
        trace_on, others = images[2], images[:2] + images[3:]
        adapter = export_onnx(model, trace_on, buf)
        onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
        runner = OnnxModel(buf.getvalue(), adapter)
        actual = [runner(x) for x in others]
        expected = [eager_outputs(model, x) for x in others]
        traced_count = len(eager_outputs(model, trace_on))
    _check_varied(expected, traced_count)
    check_same_outputs(expected, actual, atol=1e-3)


def test_upstream_heads_in_onnxruntime_as_well(models, images):
    """The baseline this is held to: Detectron2's own inference (Turbo off) exports and runs
    in onnxruntime with the same exporter and opset."""
    model = models["mask_rcnn"]
    with model.roi_heads.turbo_params(**OFF):
        buf = io.BytesIO()
        adapter = export_onnx(model, images[0], buf)
        runner = OnnxModel(buf.getvalue(), adapter)
        others = images[1:]
        check_same_outputs([eager_outputs(model, x) for x in others], [runner(x) for x in others])


def test_opt_in_mechanisms_replay_as_eager(models, images):
    """The opt-in mechanisms (rank gate, Maskness of both masks, dropped empty masks, mask
    edges at half the interior level, a score map) trace as well."""
    model = models["cascade"]
    changes = dict(
        repredict_topk=5,
        maskness_source="both",
        empty_mask="drop",
        mask_edge="half_interior",
        score_map=((0.0, 0.0), (0.3, 0.5), (1.0, 1.0)),
    )
    with model.roi_heads.turbo_params(**changes):
        adapter, traced = trace(model, images[0])
        others = images[1:]
        with torch.no_grad():
            actual = [adapter.outputs_schema(traced(x))[0]["instances"] for x in others]
        check_same_outputs([eager_outputs(model, x) for x in others], actual, atol=1e-4)


def test_class_score_maps_replay_as_eager(models, images):
    """One score map per class traces as a map for all does: each row's class picks its knots
    (the heads' ``class_score_knots`` buffer), for other images too, with no trace warning."""
    model = models["mask_rcnn"]
    ramp = ((0.0, 0.0), (0.05, 0.05), (0.3, 0.5), (1.0, 1.0))
    maps = tuple(ramp if c % 2 else IDENTITY_MAP for c in range(model.roi_heads.num_classes))
    with model.roi_heads.turbo_params(score_map=maps):
        adapter, traced = trace(model, images[0])
        others = images[1:]
        with torch.no_grad():
            actual = [adapter.outputs_schema(traced(x))[0]["instances"] for x in others]
        expected = [eager_outputs(model, x) for x in others]
    check_same_outputs(expected, actual, atol=1e-5)
    own = [eager_outputs(model, x) for x in others]  # the head's own map, not the trace's
    with pytest.raises(ValueError, match="image 0: "):
        check_same_outputs(own, actual, atol=1e-5)


def _batch_inference(model, inputs):
    return [{"instances": x} for x in model.inference(inputs, do_postprocess=False)]


def test_batch_of_two_is_refused_at_trace_time_naming_the_keys(models, images):
    model = models["mask_rcnn"]
    inputs = [{"image": images[0]}, {"image": images[1]}]
    adapter = TracingAdapter(model, inputs, _batch_inference)
    with pytest.raises(RuntimeError, match="can be traced on one image only, got a batch of 2"):
        with torch.no_grad():
            torch.jit.trace(adapter, (images[0], images[1]), check_trace=False)
    with model.roi_heads.turbo_params(**OFF):  # the keys the error names make it traceable
        with torch.no_grad():
            torch.jit.trace(adapter, (images[0], images[1]), check_trace=False)


def test_exported_model_that_differs_is_reported(models, images):
    """The check names the image and the field that differ."""
    model = models["mask_rcnn"]
    expected = [eager_outputs(model, images[0])]
    with model.roi_heads.turbo_params(**OFF):
        actual = [eager_outputs(model, images[0])]
    with pytest.raises(ValueError, match="image 0: "):
        check_same_outputs(expected, actual)


@pytest.mark.parametrize(
    "config, fmt",
    [
        ("configs/shapes/turbo_mask_rcnn_R18_FPN.yaml", "torchscript"),
        ("configs/shapes/turbo_mask_rcnn_R18_FPN.yaml", "onnx"),
        ("configs/shapes/turbo_cascade_mask_rcnn_R18_FPN.py", "torchscript"),
    ],
    ids=["yacs-torchscript", "yacs-onnx", "lazyconfig-torchscript"],
)
def test_export_model_end_to_end(entry_point, tmp_path, capsys, config, fmt):
    from turbo.benchmark.reference_models import REPO_ROOT

    export_model = entry_point("export_model")
    weights = os.path.join(
        REPO_ROOT,
        "checkpoints",
        "shapes_cascade_mask_rcnn_R18_FPN.pth"
        if "cascade" in config
        else "shapes_mask_rcnn_R18_FPN.pth",
    )
    override = f"train.init_checkpoint={weights}" if config.endswith(".py") else None
    opts = [override] if override else ["MODEL.WEIGHTS", weights]
    argv = [
        "--config-file",
        os.path.join(REPO_ROOT, config),
        "--format",
        fmt,
        "--output",
        str(tmp_path),
        "--num-samples",
        "2",
        *opts,
    ]
    assert export_model.main(argv) == 0
    out = tmp_path / ("model.ts" if fmt == "torchscript" else "model.onnx")
    assert out.stat().st_size > 1e6
    assert "equal to eager inference on 2 images" in capsys.readouterr().out
    if fmt == "onnx":
        onnx.checker.check_model(str(out))
    else:
        torch.jit.load(str(out))


def test_export_model_refuses_other_methods(entry_point, tmp_path):
    export_model = entry_point("export_model")
    with pytest.raises(SystemExit, match="--export-method scripting is not supported"):
        export_model.main(
            ["--config-file", "x.yaml", "--output", str(tmp_path), "--export-method", "scripting"]
        )
