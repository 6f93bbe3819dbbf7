"""Tests of the photo-like scenes dataset (turbo/datasets/scenes.py): determinism, the
annotation as the visible part at the alpha threshold, soft edges, the crowded split, the
COCO files and the Detectron2 registration."""

import filecmp
import json
import os

import detectron2  # noqa: F401  (a missing Detectron2 must fail loudly)
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_util

from turbo import datasets
from turbo.datasets import scenes

SIZE = (96, 128)


def test_determinism_whatever_the_workers(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    scenes.make_scenes(a, "s", 6, seed=3, image_size=SIZE, num_workers=1)
    scenes.make_scenes(b, "s", 6, seed=3, image_size=SIZE, num_workers=3)
    files = sorted(os.listdir(os.path.join(a, "s")))
    assert files == [f"{i:06d}.jpg" for i in range(6)]
    match, mismatch, errors = filecmp.cmpfiles(os.path.join(a, "s"), os.path.join(b, "s"), files)
    assert not mismatch and not errors
    assert filecmp.cmp(os.path.join(a, "s.json"), os.path.join(b, "s.json"), shallow=False)
    c = str(tmp_path / "c")
    scenes.make_scenes(c, "s", 6, seed=4, image_size=SIZE)
    assert not filecmp.cmp(os.path.join(a, "s.json"), os.path.join(c, "s.json"), shallow=False)
    # an image depends on (seed, index) alone: a larger split's first images are the smaller
    # one's, as scenes_val_large's first 200 are scenes_val's
    d = str(tmp_path / "d")
    scenes.make_scenes(d, "s", 8, seed=3, image_size=SIZE)
    match, mismatch, errors = filecmp.cmpfiles(os.path.join(a, "s"), os.path.join(d, "s"), files)
    assert match == files
    with open(os.path.join(a, "s.json")) as f, open(os.path.join(d, "s.json")) as g:
        small, large = json.load(f), json.load(g)
    assert large["annotations"][: len(small["annotations"])] == small["annotations"]
    val, val_large = datasets.SCENE_SPLITS["scenes_val"], datasets.SCENE_SPLITS["scenes_val_large"]
    assert val_large[1] > val[1] and val_large[:1] + val_large[2:] == val[:1] + val[2:]


def test_visible_alphas_by_hand():
    """Back to front: the back matte shows through the front one's transparency only."""
    back = np.zeros((4, 4), np.float32)
    back[:, :3] = 1.0
    front = np.zeros((4, 4), np.float32)
    front[:, 2:] = 0.6
    vb, vf = scenes.visible_alphas([back, front])
    np.testing.assert_allclose(vf, front)
    np.testing.assert_allclose(vb[:, :2], 1.0)
    np.testing.assert_allclose(vb[:, 2], 0.4)  # 1.0 * (1 - 0.6): below the threshold
    np.testing.assert_allclose(vb[:, 3], 0.0)


@pytest.mark.parametrize("crowd", [False, True])
def test_annotation_is_the_visible_part_at_the_alpha_threshold(crowd):
    size = scenes.CROWD_IMAGE_SIZE if crowd else SIZE
    rng = np.random.default_rng(5)
    img, objects, alphas = scenes.generate_scene(rng, size, crowd=crowd, return_alphas=True)
    assert img.shape == (*size, 3) and img.dtype == np.uint8
    assert len(objects) == len(alphas) > 0
    visible = scenes.visible_alphas(alphas)
    union = np.zeros(size, bool)
    for (cls, mask), v, a in zip(objects, visible, alphas):
        assert 0 <= cls < scenes.NUM_SCENE_CLASSES
        np.testing.assert_array_equal(mask, v > scenes.ALPHA_THRESH)
        assert mask.sum() >= scenes.MIN_VISIBLE_PIXELS
        assert mask.sum() >= scenes.MIN_VISIBLE_FRACTION * (a > scenes.ALPHA_THRESH).sum()
        assert not (union & mask).any()  # masks are disjoint
        union |= mask
    # edges are soft (anti-aliased, some defocused): mattes take values strictly between 0 and 1
    soft = sum(int(((a > 0.05) & (a < 0.95)).sum()) for a in alphas)
    assert soft > 0.05 * sum(int((a > 0.05).sum()) for a in alphas)
    if crowd:
        lo, hi = scenes.CROWD_INSTANCES
        assert lo <= len(objects) <= hi


def test_every_class_and_outline_kind_appears(tmp_path):
    json_file = scenes.make_scenes(str(tmp_path), "s", 12, seed=1, image_size=SIZE)
    with open(json_file) as f:
        data = json.load(f)
    assert [c["name"] for c in data["categories"]] == list(scenes.SCENE_CLASSES)
    assert {a["category_id"] for a in data["annotations"]} == set(
        range(1, scenes.NUM_SCENE_CLASSES + 1)
    )
    for a in data["annotations"]:
        m = mask_util.decode(
            {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        )
        assert m.sum() == a["area"] > 0
        x, y, w, h = a["bbox"]
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)


def test_crowded_split_counts(tmp_path):
    json_file = scenes.make_scenes(
        str(tmp_path), "crowd", 3, seed=13, image_size=scenes.CROWD_IMAGE_SIZE, crowd=True
    )
    with open(json_file) as f:
        data = json.load(f)
    counts = np.bincount([a["image_id"] for a in data["annotations"]], minlength=4)[1:]
    lo, hi = scenes.CROWD_INSTANCES
    assert all(lo <= c <= hi for c in counts), counts
    # many small: most objects below 32x32 pixels (COCO's "small")
    assert np.mean([a["area"] < 32 * 32 for a in data["annotations"]]) > 0.5


def test_registration_generates_on_first_use(tmp_path):
    name = "scenes_test_tiny"
    json_file = datasets.register_split(name, "scenes", "tiny", 3, 21, SIZE, root=str(tmp_path))
    assert not os.path.exists(json_file)  # lazily generated
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3 and os.path.exists(json_file)
    assert dicts[0]["file_name"].endswith(".jpg") and dicts[0]["annotations"]
    assert MetadataCatalog.get(name).thing_classes == list(scenes.SCENE_CLASSES)
    assert MetadataCatalog.get(name).evaluator_type == "coco"
    datasets.register_synthetic_datasets(str(tmp_path))
    registered = set(DatasetCatalog.list())
    assert set(datasets.SCENE_SPLITS) <= registered and "shapes_val" in registered
    split, n, seed, size, crowd = datasets.SCENE_SPLITS["scenes_crowd_val"]
    assert crowd is True and size == scenes.CROWD_IMAGE_SIZE
