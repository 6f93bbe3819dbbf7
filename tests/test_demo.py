"""projects/turbo/demo.py with Detectron2's demo command line, on shapes images and on a short
generated video, with the shipped checkpoint (real DefaultPredictor, real video files)."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from turbo.datasets import make_shapes

DEMO = os.path.join(ROOT, "projects", "turbo", "demo.py")
CONFIG = os.path.join(ROOT, "configs", "shapes", "turbo_mask_rcnn_R18_FPN.yaml")
LAZY_CONFIG = os.path.join(ROOT, "configs", "shapes", "turbo_mask_rcnn_R18_FPN.py")
WEIGHTS = os.path.join(ROOT, "checkpoints", "shapes_mask_rcnn_R18_FPN.pth")
TITLE = 28  # px of the title band of turbo.visualization.titled


@pytest.fixture(scope="module")
def shapes_images(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_images")
    make_shapes(str(out), "demo", num_images=3, seed=5)
    return sorted(str(p) for p in (out / "demo").iterdir())


def _demo(args, tmp_path):
    env = dict(
        os.environ,
        TURBO_DATASETS=str(tmp_path / "data"),
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
    )
    out = subprocess.run(
        [sys.executable, DEMO] + args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.parametrize("compare", [False, True])
def test_images_into_a_folder(shapes_images, tmp_path, compare):
    out_dir = tmp_path / "out"
    pattern = os.path.join(os.path.dirname(shapes_images[0]), "*.png")
    args = ["--compare"] if compare else []
    args += [
        "--config-file",
        CONFIG,
        "--input",
        pattern,
        "--output",
        str(out_dir),
        "--confidence-threshold",
        "0.6",
        "--opts",
        "MODEL.WEIGHTS",
        WEIGHTS,
    ]
    res = _demo(args, tmp_path)
    assert "instances in" in res.stderr + res.stdout
    written = sorted(os.listdir(out_dir))
    assert written == [os.path.basename(p) for p in shapes_images]
    for name in written:
        picture = np.asarray(Image.open(out_dir / name))
        source = np.asarray(Image.open(os.path.join(os.path.dirname(shapes_images[0]), name)))
        h, w = 2 * source.shape[0], 2 * source.shape[1]  # 256 px images are drawn at 512
        title = TITLE if compare else 0  # "baseline" and "Turbo" written above the pictures
        assert picture.shape == ((h + title, 2 * w + 4, 3) if compare else (h, w, 3))
        if compare:
            band = picture[:title, :w]
            assert (band == 255).mean() > 0.8 and (band < 128).any()
        drawn = np.asarray(Image.fromarray(source).resize((w, h)))
        assert np.abs(picture[title:, :w].astype(int) - drawn).mean() > 1  # something was drawn


def test_one_image_to_a_file_with_a_lazy_config(shapes_images, tmp_path):
    out = tmp_path / "one.png"
    _demo(
        [
            "--config-file",
            LAZY_CONFIG,
            "--input",
            shapes_images[0],
            "--output",
            str(out),
            "--compare",
            "--opts",
            "model.roi_heads.turbo.num_iters=2",
        ],
        tmp_path,
    )
    assert np.asarray(Image.open(out)).shape == (512 + TITLE, 2 * 512 + 4, 3)


def test_video(shapes_images, tmp_path):
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (256, 256))
    for p in shapes_images:
        writer.write(cv2.imread(p))
    writer.release()
    out = str(tmp_path / "clip_turbo.mp4")
    _demo(
        [
            "--config-file",
            CONFIG,
            "--video-input",
            video,
            "--output",
            out,
            "--compare",
            "--opts",
            "MODEL.WEIGHTS",
            WEIGHTS,
        ],
        tmp_path,
    )
    cap = cv2.VideoCapture(out)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == len(shapes_images)
    assert frames[0].shape == (512 + TITLE, 2 * 512 + 4, 3)


def test_bad_input_is_named(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run(
        [
            sys.executable,
            DEMO,
            "--config-file",
            CONFIG,
            "--video-input",
            str(tmp_path / "missing.mp4"),
            "--output",
            str(tmp_path / "o.mp4"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0 and "cannot be opened as a video" in out.stderr
