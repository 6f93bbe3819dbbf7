"""Deployment through Detectron2's ``TracingAdapter`` (as ``tools/deploy/export_model.py
--export-method tracing`` does): Turbo off traces and replays other images as upstream does;
Turbo on is refused at trace time with an error naming the keys, never a wrong graph."""

import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.export import TracingAdapter
from detectron2.modeling import build_model

from turbo.benchmark.reference_models import REFERENCE_MODELS, REPO_ROOT
from turbo.config import get_turbo_cfg
from turbo.datasets import register_synthetic_datasets

# Detectron2's own heads warn that some Python values become trace constants; they trace
# correctly all the same (the replay test checks it); PyTorch marks tracing as deprecated, which
# is what Detectron2's deployment still uses
pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning"),
]


@pytest.fixture(scope="module")
def model_and_images():
    _, config, weights = REFERENCE_MODELS["mask_rcnn"]
    cfg = get_turbo_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(os.path.join(REPO_ROOT, weights))
    register_synthetic_datasets()
    dicts = DatasetCatalog.get("shapes_val")[:2]
    images = [
        torch.as_tensor(read_image(d["file_name"], format="BGR").transpose(2, 0, 1).copy())
        for d in dicts
    ]
    return model, images


def _inference(model, inputs):
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def _trace(model, image):
    adapter = TracingAdapter(model, [{"image": image}], _inference)
    with torch.no_grad():
        return adapter, torch.jit.trace(adapter, (image,), check_trace=False)


@pytest.mark.parametrize(
    "changes",
    [{}, {"num_iters": 0}, {"soft_nms": {"enabled": False}}],
    ids=["default", "soft_nms_alone", "cycle_alone"],
)
def test_tracing_with_turbo_on_is_refused_naming_the_keys(model_and_images, changes):
    model, images = model_and_images
    with model.roi_heads.turbo_params(**changes):
        with pytest.raises(RuntimeError, match="cannot be traced with Turbo on") as err:
            _trace(model, images[0])
    assert "MODEL.TURBO.NUM_ITERS 0" in str(err.value)
    assert "MODEL.TURBO.SOFT_NMS.ENABLED False" in str(err.value)


def test_tracing_with_turbo_off_replays_other_images(model_and_images):
    """Turbo off is Detectron2's own inference: traced on one image, it gives the eager
    outputs on another image with another number of detections."""
    model, images = model_and_images
    with model.roi_heads.turbo_params(num_iters=0, soft_nms={"enabled": False}):
        adapter, traced = _trace(model, images[0])
        with torch.no_grad():
            eager = _inference(model, [{"image": images[1]}])[0]["instances"]
            replay = adapter.outputs_schema(traced(images[1]))[0]["instances"]
            first = _inference(model, [{"image": images[0]}])[0]["instances"]
    assert len(eager) != len(first)  # the second image is not the traced one's count
    assert len(replay) == len(eager)
    torch.testing.assert_close(replay.pred_boxes.tensor, eager.pred_boxes.tensor)
    torch.testing.assert_close(replay.scores, eager.scores)
    assert torch.equal(replay.pred_classes, eager.pred_classes)
    torch.testing.assert_close(replay.pred_masks, eager.pred_masks)
