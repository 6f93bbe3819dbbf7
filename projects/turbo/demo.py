#!/usr/bin/env python
"""Turbo-Inference on your own images or video, with Detectron2's ``demo/demo.py`` command line.

::

    python projects/turbo/demo.py --config-file configs/shapes/turbo_mask_rcnn_R18_FPN.yaml \
        --input "images/*.png" --output out/ --compare \
        --opts MODEL.WEIGHTS checkpoints/shapes_mask_rcnn_R18_FPN.pth

``--compare`` writes baseline | Turbo side by side (the same colour for the same object, the
detection stage's boxes dashed red on the Turbo side). Configs may be yacs (``--opts KEY
VALUE``) or LazyConfig (``--opts key=value``). Without ``--output`` the result is shown in a
window (an OpenCV with GUI support is needed for that).
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import glob
import os
import sys
import time

import cv2
import numpy as np
import tqdm
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from turbo.build import load_config
from turbo.datasets import register_synthetic_datasets
from turbo.predictor import build_predictor, class_names, predict_baseline_and_turbo
from turbo.visualization import distinct_colors, draw_instances, side_by_side

WINDOW_NAME = "turbo"


def get_parser():
    p = argparse.ArgumentParser(description="Turbo-Inference demo")
    p.add_argument("--config-file", required=True, metavar="FILE", help="yacs or LazyConfig")
    p.add_argument("--input", nargs="+", help="images, or glob patterns of images")
    p.add_argument("--video-input", help="a video file")
    p.add_argument("--output", help="a file (one image or a video) or a folder to write into")
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum score of the detections shown",
    )
    p.add_argument("--compare", action="store_true", help="baseline | Turbo side by side")
    p.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE pairs (yacs) or key=value (LazyConfig)",
    )
    return p


def render(predictor, image_bgr, threshold, compare):
    """The picture of one BGR image's predictions (RGB), and the Turbo instances shown."""
    rgb = image_bgr[:, :, ::-1]
    names = class_names(predictor)
    if compare:
        heads = predictor.model.roi_heads
        with heads.turbo_params(num_iters=0):  # the detection stage: its boxes, drawn dashed
            stage = predictor(image_bgr)["instances"].to("cpu")
        base, turbo = predict_baseline_and_turbo(predictor, image_bgr)
        stage_boxes = stage[stage.scores > threshold].pred_boxes.tensor.numpy()
        picture = side_by_side(rgb, base, turbo, names, threshold, stage_boxes)
        return picture, turbo[turbo.scores > threshold]
    inst = predictor(image_bgr)["instances"].to("cpu")
    inst = inst[inst.scores > threshold]
    return draw_instances(rgb, inst, distinct_colors(len(inst)), names), inst


def _output_path(output, source, is_dir):
    return os.path.join(output, os.path.basename(source)) if is_dir else output


def run_images(args, predictor, log):
    paths = [p for pattern in args.input for p in (sorted(glob.glob(pattern)) or [pattern])]
    out_is_dir = args.output is not None and (
        os.path.isdir(args.output) or len(paths) > 1 or args.output.endswith(os.sep)
    )
    if out_is_dir:
        os.makedirs(args.output, exist_ok=True)
    for path in tqdm.tqdm(paths, disable=not args.output):
        image = read_image(path, format="BGR")
        t0 = time.time()
        picture, inst = render(predictor, image, args.confidence_threshold, args.compare)
        log.info("%s: %d instances in %.2fs", path, len(inst), time.time() - t0)
        if args.output:
            cv2.imwrite(_output_path(args.output, path, out_is_dir), picture[:, :, ::-1])
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, picture[:, :, ::-1])
            if cv2.waitKey(0) == 27:
                break  # esc to quit


def run_video(args, predictor, log):
    video = cv2.VideoCapture(args.video_input)
    if not video.isOpened():
        raise SystemExit(f"--video-input {args.video_input}: cannot be opened as a video")
    fps = video.get(cv2.CAP_PROP_FPS) or 15.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    writer = None
    if args.output:
        out = args.output
        if os.path.isdir(out):
            out = os.path.join(
                out, os.path.splitext(os.path.basename(args.video_input))[0] + ".mp4"
            )
    n = 0
    for _ in tqdm.tqdm(range(frames), disable=not args.output):
        ok, frame = video.read()
        if not ok:
            break
        picture, _ = render(predictor, frame, args.confidence_threshold, args.compare)
        bgr = np.ascontiguousarray(picture[:, :, ::-1])
        if args.output:
            if writer is None:
                h, w = bgr.shape[:2]
                writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(bgr)
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, bgr)
            if cv2.waitKey(1) == 27:
                break
        n += 1
    video.release()
    if writer is not None:
        writer.release()
        log.info("wrote %d frames to %s", n, out)


def main(argv=None):
    args = get_parser().parse_args(argv)
    if not args.input and not args.video_input:
        raise SystemExit("give --input images or a --video-input video")
    log = setup_logger(name="turbo", abbrev_name="turbo")
    register_synthetic_datasets()
    cfg = load_config(args.config_file, args.opts)
    predictor = build_predictor(cfg)
    if args.video_input:
        run_video(args, predictor, log)
    else:
        run_images(args, predictor, log)


if __name__ == "__main__":
    main(sys.argv[1:])
