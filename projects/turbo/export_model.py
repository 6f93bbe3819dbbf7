#!/usr/bin/env python
"""Export a model with turbo heads to TorchScript or ONNX, with Detectron2's
``tools/deploy/export_model.py`` command line (``--export-method tracing``), and check the
exported model against eager inference::

    python projects/turbo/export_model.py \
        --config-file configs/shapes/turbo_mask_rcnn_R18_FPN.yaml \
        --format onnx --export-method tracing --output out/ \
        MODEL.WEIGHTS checkpoints/shapes_mask_rcnn_R18_FPN.pth

Writes ``model.ts`` (TorchScript) or ``model.onnx`` to ``--output``. The model is traced on
the first sample image and then run, exported, on every sample image: ``--sample-image``
files, or the first ``--num-samples`` images of the config's test dataset. Each must give
the eager model's boxes, scores, classes and masks (``--atol``), else the command fails
naming the image and the field. Configs may be yacs (trailing ``KEY VALUE``) or LazyConfig
(trailing ``key=value``). The exported model takes one (3, H, W) uint8 image resized as at
test time and returns the ROI heads' outputs before ``detector_postprocess``
(``turbo.export``). ONNX needs the ``onnx`` and ``onnxruntime`` packages.
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import logging
import os
import sys
import warnings

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from turbo.build import load_config
from turbo.datasets import register_synthetic_datasets
from turbo.export import (
    EXPORT_FORMATS,
    ONNX_OPSET,
    OnnxModel,
    check_same_outputs,
    eager_outputs,
    export_onnx,
    trace,
)
from turbo.heads import TurboMixin
from turbo.predictor import build_predictor, model_input


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a turbo model to TorchScript or ONNX")
    p.add_argument("--config-file", required=True, metavar="FILE", help="yacs or LazyConfig")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript")
    p.add_argument(
        "--export-method",
        default="tracing",
        help="tracing (the only method for turbo heads: see the error for the others)",
    )
    p.add_argument("--output", required=True, help="folder for model.ts / model.onnx")
    p.add_argument("--sample-image", nargs="+", default=None, help="images to trace and check")
    p.add_argument(
        "--num-samples",
        type=int,
        default=4,
        help="without --sample-image: this many images of the test dataset",
    )
    p.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset")
    p.add_argument("--atol", type=float, default=1e-3, help="tolerance of the check")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides")
    return p


def test_dataset(cfg) -> str:
    """The config's first test dataset."""
    if isinstance(cfg, CfgNode):
        return cfg.DATASETS.TEST[0]
    names = cfg.dataloader.test.dataset.names
    return names if isinstance(names, str) else names[0]


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logger = logging.getLogger("turbo")
    if args.export_method != "tracing":
        raise SystemExit(
            f"--export-method {args.export_method} is not supported: turbo models export by "
            "tracing (detectron2.export.TracingAdapter); scripting needs Detectron2's "
            "scripting support, which its ROI heads with Python structures lack, and "
            "caffe2_tracing needs Caffe2, which PyTorch no longer ships"
        )
    if args.num_samples < 1:
        raise SystemExit(f"--num-samples must be >= 1, got {args.num_samples}")
    register_synthetic_datasets()
    cfg = load_config(args.config_file, args.opts)
    predictor = build_predictor(cfg)
    model = predictor.model
    if isinstance(getattr(model, "roi_heads", None), TurboMixin):
        logger.info("Turbo parameters frozen into the export: %s", model.roi_heads.turbo)

    if args.sample_image:
        files = args.sample_image
    else:
        files = [d["file_name"] for d in DatasetCatalog.get(test_dataset(cfg))[: args.num_samples]]
    inputs = [model_input(predictor, read_image(f, format="BGR")) for f in files]
    if len(inputs) == 1:
        logger.warning("one sample image: the export is checked on the image it was traced on")

    os.makedirs(args.output, exist_ok=True)
    if args.format == "torchscript":
        path = os.path.join(args.output, "model.ts")
        adapter, traced = trace(model, inputs[0])
        torch.jit.save(traced, path)
        exported = torch.jit.load(path)
        with torch.no_grad():
            actual = [adapter.outputs_schema(exported(x))[0]["instances"] for x in inputs]
    else:
        try:  # optional dependencies: only ONNX deployment needs them
            import onnx
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise SystemExit(
                f"--format onnx needs the onnx and onnxruntime packages ({e}): "
                "pip install onnx onnxruntime"
            ) from None
        path = os.path.join(args.output, "model.onnx")
        adapter = export_onnx(model, inputs[0], path, args.opset)
        onnx.checker.check_model(path)
        runner = OnnxModel(path, adapter)
        actual = [runner(x) for x in inputs]
    logger.info("wrote %s", path)

    expected = [eager_outputs(model, x).to("cpu") for x in inputs]
    try:
        report = check_same_outputs(expected, [a.to("cpu") for a in actual], args.atol)
    except ValueError as e:
        logger.error("the exported model differs from eager inference: %s", e)
        return 1
    for f, x, e, diffs in zip(files, inputs, expected, report):
        worst = max(diffs.values(), default=0.0)
        logger.info(
            "%s (%dx%d): %d detections, as eager (largest difference %.2g)",
            os.path.basename(f),
            x.shape[1],
            x.shape[2],
            len(e),
            worst,
        )
    print(f"{args.format} export {path}: equal to eager inference on {len(inputs)} images")
    return 0


if __name__ == "__main__":
    # Detectron2's code tells, while it is traced, of values that become constants of the
    # trace: its model structure, the same for every input (the command checks the replay)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"detectron2\.")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch$")
    setup_logger(name="turbo")  # the command's own output; main() leaves logging as it finds it
    sys.exit(main())
