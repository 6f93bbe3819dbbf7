"""Deployment of a turbo model through Detectron2's ``TracingAdapter``: TorchScript and ONNX.

What Detectron2's ``tools/deploy/export_model.py --export-method tracing`` does, for models
with turbo heads, plus the check that the exported model gives the eager outputs. A traced
model takes one image, a (3, H, W) uint8 tensor in the model's input format, already resized
as the test-time augmentation resizes it (any H and W), and returns the flattened
``Instances`` of its ROI heads before ``detector_postprocess``: boxes XYXY in that image,
``pred_masks`` (N, 1, M, M) in those boxes. Turbo's parameters are those of the model when it
is traced; they become constants of the exported graph.

The turbo stages are written so that a trace of one image replays any other image (size,
number of detections, none included): per-image counts are never read back from tensors, the
Soft-NMS loop is scripted (``turbo.ops.soft_nms_in_order``) and ties sort as in eager
inference. A batch of several images cannot be traced with Turbo on; the heads refuse it.
"""

from __future__ import annotations

import io
from typing import Callable, Dict, List, Optional, Sequence

import torch
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Instances
from torch import Tensor, nn

__all__ = [
    "EXPORT_FORMATS",
    "ONNX_OPSET",
    "tracing_adapter",
    "trace",
    "export_onnx",
    "OnnxModel",
    "onnx_bytes",
    "eager_outputs",
    "output_differences",
    "check_same_outputs",
]

EXPORT_FORMATS = ("torchscript", "onnx")
# The ONNX opset of exports: 16 is the first with ``GridSample`` (mask resampling) and with
# ``RoiAlign``'s half-pixel mode (Detectron2's aligned ROIAlign); 17 is what upstream's own
# Mask R-CNN was checked with here as well.
ONNX_OPSET = 17


def _rcnn_inference(model: GeneralizedRCNN, inputs: List[Dict[str, Tensor]]):
    """The ROI heads' outputs before ``detector_postprocess`` (``do_postprocess=False``), as
    Detectron2's export tool traces a ``GeneralizedRCNN``."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def eager_outputs(model: nn.Module, image: Tensor) -> Instances:
    """What an exported model computes, run eagerly: the ROI heads' ``Instances`` of one
    (3, H, W) image, before ``detector_postprocess``."""
    with torch.no_grad():
        if isinstance(model, GeneralizedRCNN):
            return _rcnn_inference(model, [{"image": image}])[0]["instances"]
        return model([{"image": image}])[0]["instances"]


def tracing_adapter(model: nn.Module, image: Tensor) -> TracingAdapter:
    """Detectron2's ``TracingAdapter`` of ``model`` (eval mode) on one (3, H, W) image; a
    ``GeneralizedRCNN`` (and its subclasses) is traced without its final resize."""
    if model.training:
        raise ValueError("the model must be in eval mode (model.eval()) to be traced")
    inference: Optional[Callable] = _rcnn_inference if isinstance(model, GeneralizedRCNN) else None
    return TracingAdapter(model, [{"image": image}], inference).eval()


def trace(model: nn.Module, image: Tensor) -> tuple:
    """(adapter, TorchScript module) of ``model`` traced on ``image`` (3, H, W): call the
    module on another image and read its outputs with ``adapter.outputs_schema``."""
    adapter = tracing_adapter(model, image)
    with torch.no_grad():
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
    return adapter, traced


def export_onnx(model: nn.Module, image: Tensor, f, opset: int = ONNX_OPSET) -> TracingAdapter:
    """Export ``model`` traced on ``image`` (3, H, W) to ONNX (``f``: a path or a binary file),
    with the tracing exporter Detectron2 uses; height and width of the input are dynamic.
    Returns the adapter, whose ``outputs_schema`` reads the graph's flat outputs.

    An operator the exporter cannot express at ``opset`` fails the export with PyTorch's
    error naming it (re-raised with the opset), never a graph without it.
    """
    adapter = tracing_adapter(model, image)
    try:
        with torch.no_grad():
            torch.onnx.export(
                adapter,
                (image,),
                f,
                opset_version=opset,
                dynamo=False,
                input_names=["image"],
                dynamic_axes={"image": {1: "height", 2: "width"}},
            )
    except torch.onnx.errors.OnnxExporterError as e:
        raise RuntimeError(f"ONNX export at opset {opset} failed: {e}") from e
    return adapter


class OnnxModel:
    """An exported ONNX model run in ``onnxruntime`` (CPU), giving ``Instances`` as the eager
    model's ROI heads do."""

    def __init__(self, model_bytes_or_path, adapter: TracingAdapter):
        import onnxruntime  # optional dependency: only ONNX deployment needs it

        options = onnxruntime.SessionOptions()
        # errors only: its graph optimiser notes that it leaves the Soft-NMS loop's subgraph
        # inputs unrenamed, which changes nothing the model computes
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            model_bytes_or_path, options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.adapter = adapter

    def __call__(self, image: Tensor) -> Instances:
        """``Instances`` of one (3, H, W) uint8 image (resized input frame)."""
        outputs = self.session.run(None, {self.input_name: image.cpu().numpy()})
        flat = tuple(torch.as_tensor(o) for o in outputs)
        return self.adapter.outputs_schema(flat)[0]["instances"]


def onnx_bytes(model: nn.Module, image: Tensor, opset: int = ONNX_OPSET) -> tuple:
    """(ONNX model bytes, adapter) of ``model`` traced on ``image``."""
    buf = io.BytesIO()
    adapter = export_onnx(model, image, buf, opset)
    return buf.getvalue(), adapter


def output_differences(expected: Instances, actual: Instances) -> Dict[str, float]:
    """Largest absolute difference of each field of two ``Instances`` of one image (boxes as
    their tensors); raises ``ValueError`` naming what differs when the detection counts or the
    fields differ."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(actual)} detections instead of the eager {len(expected)}")
    if set(expected.get_fields()) != set(actual.get_fields()):
        raise ValueError(
            f"fields {sorted(actual.get_fields())} instead of {sorted(expected.get_fields())}"
        )
    diffs = {}
    for name in expected.get_fields():
        a, b = expected.get(name), actual.get(name)
        a, b = getattr(a, "tensor", a), getattr(b, "tensor", b)
        if a.shape != b.shape:
            raise ValueError(f"{name} has shape {tuple(b.shape)} instead of {tuple(a.shape)}")
        diffs[name] = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    return diffs


def check_same_outputs(
    expected: Sequence[Instances], actual: Sequence[Instances], atol: float = 1e-3
) -> List[Dict[str, float]]:
    """:func:`output_differences` for each image; raises ``ValueError`` naming the image and
    the field where the exported model differs from eager inference by more than ``atol``
    (classes exactly)."""
    report = []
    for i, (e, a) in enumerate(zip(expected, actual)):
        try:
            diffs = output_differences(e, a)
        except ValueError as err:
            raise ValueError(f"image {i}: {err}") from None
        for name, d in diffs.items():
            tol = 0.0 if name == "pred_classes" else atol
            if not d <= tol:
                raise ValueError(
                    f"image {i}: {name} differs from eager inference by {d:.3g} (> {tol:g})"
                )
        report.append(diffs)
    return report
