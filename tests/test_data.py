"""Tests of the synthetic shapes dataset (turbo/datasets)."""

import filecmp
import json
import os
import threading

import detectron2  # noqa: F401  (a missing Detectron2 must fail loudly)
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from turbo import datasets as shapes
from turbo.datasets.shapes import MIN_VISIBLE_PIXELS

SIZE = (64, 96)


def _files(root, split):
    d = os.path.join(root, split)
    return sorted(os.listdir(d))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A modest dataset shared by the content checks."""
    out = str(tmp_path_factory.mktemp("shapes"))
    json_file = shapes.make_shapes(out, "s", num_images=16, seed=7, image_size=SIZE)
    return out, json_file


def test_determinism(tmp_path):
    a, b, c = (str(tmp_path / x) for x in "abc")
    ja = shapes.make_shapes(a, "t", 3, seed=5, image_size=SIZE)
    jb = shapes.make_shapes(b, "t", 3, seed=5, image_size=SIZE)
    jc = shapes.make_shapes(c, "t", 3, seed=6, image_size=SIZE)
    assert ja == os.path.join(a, "t.json")
    assert _read(ja) == _read(jb)
    names = _files(a, "t")
    assert names == ["000000.png", "000001.png", "000002.png"] == _files(b, "t")
    for n in names:
        assert filecmp.cmp(os.path.join(a, "t", n), os.path.join(b, "t", n), shallow=False)
    assert _read(ja) != _read(jc)
    assert all(_read(os.path.join(a, "t", n)) != _read(os.path.join(c, "t", n)) for n in names)


def test_coco_content(sample):
    out, json_file = sample
    coco = COCO(json_file)
    assert sorted(coco.getCatIds()) == list(range(1, shapes.NUM_CLASSES + 1))
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(shapes.SHAPE_CLASSES)
    assert len(coco.imgs) == 16
    seen = set()
    for img_id, img in coco.imgs.items():
        assert (img["height"], img["width"]) == SIZE
        assert os.path.isfile(os.path.join(out, "s", img["file_name"]))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
            assert ann["iscrowd"] == 0
            assert isinstance(ann["segmentation"]["counts"], str)
            m = coco.annToMask(ann).astype(bool)
            assert m.shape == SIZE
            area = int(m.sum())
            assert area >= MIN_VISIBLE_PIXELS
            assert area == ann["area"] == int(mask_util.area(ann["segmentation"]))
            ys, xs = np.nonzero(m)
            tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["bbox"] == [float(v) for v in tight]
            seen.add(ann["category_id"])
    assert seen == set(range(1, shapes.NUM_CLASSES + 1))
    assert len(coco.anns) >= 3 * 16 // 2


def test_visible_masks_disjoint(sample):
    _, json_file = sample
    coco = COCO(json_file)
    overlapping_boxes = 0
    for img_id in coco.imgs:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(np.int32)
        assert masks.sum(0).max() <= 1  # pairwise intersections are empty
        for i in range(len(anns)):
            for j in range(i):
                (x0, y0, w0, h0), (x1, y1, w1, h1) = anns[i]["bbox"], anns[j]["bbox"]
                if min(x0 + w0, x1 + w1) > max(x0, x1) and min(y0 + h0, y1 + h1) > max(y0, y1):
                    overlapping_boxes += 1
    assert overlapping_boxes > 0  # the scenes do contain occlusions / touching instances


def test_generate_image_masks_exact():
    rng = np.random.default_rng(0)
    img, insts = shapes.generate_image(rng, SIZE)
    assert img.shape == SIZE + (3,) and img.dtype == np.uint8
    for cls, m in insts:
        assert 0 <= cls < shapes.NUM_CLASSES and m.dtype == bool and m.shape == SIZE


def test_registration(tmp_path):
    root = str(tmp_path / "root")
    name = "shapes_test_reg"
    json_file = shapes.register_tiny_shapes(root, name=name, num_images=3, seed=11)
    assert name in DatasetCatalog.list()
    assert not os.path.exists(json_file)  # lazy: nothing generated yet
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == list(shapes.SHAPE_CLASSES)
    assert meta.json_file == json_file and meta.evaluator_type == "coco"
    assert json_file.startswith(os.path.abspath(root) + os.sep)
    assert f"v{shapes.GENERATOR_VERSION}" in json_file and "seed11" in json_file
    dicts = DatasetCatalog.get(name)
    assert os.path.isfile(json_file)
    assert len(dicts) == 3
    n = 0
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and (d["height"], d["width"]) == (64, 96)
        for a in d["annotations"]:
            m = mask_util.decode(a["segmentation"])
            assert m.shape == (64, 96) and m.sum() > 0
            assert 0 <= a["category_id"] < shapes.NUM_CLASSES  # contiguous ids
            n += 1
    assert n > 0
    # idempotent: re-registering (even with other arguments) keeps the first registration
    assert (
        shapes.register_tiny_shapes(str(tmp_path / "other"), name=name, num_images=3, seed=11)
        == json_file
    )
    assert len(DatasetCatalog.get(name)) == 3
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_default_registration_and_env_root(tmp_path, monkeypatch):
    monkeypatch.setenv(shapes.ENV_ROOT, str(tmp_path / "envroot"))
    assert shapes.dataset_root() == str(tmp_path / "envroot")
    before = set(DatasetCatalog.list())
    registered = shapes.register_shapes(root=str(tmp_path / "defaults"))
    added = set(registered) - before
    # lazy: registering the defaults generates nothing
    assert not os.path.exists(str(tmp_path / "defaults"))
    assert set(registered) == {
        "shapes_train",
        "shapes_val",
        "shapes_tune",
        "shapes_tune_large",
        "shapes_val_large",
    }
    for name, jf in registered.items():
        assert MetadataCatalog.get(name).json_file == jf
        assert "{}x{}".format(*shapes.IMAGE_SIZE) in jf
    assert shapes.register_shapes() == registered  # idempotent, no regeneration
    for name in added:  # do not leak tmp-rooted registrations into other tests
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    # env-var root with a fresh name
    name = "shapes_test_env"
    jf = shapes.register_tiny_shapes(name=name, num_images=2, seed=3)
    assert jf.startswith(str(tmp_path / "envroot") + os.sep)
    assert len(DatasetCatalog.get(name)) == 2 and os.path.isfile(jf)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_cache_concurrent_generation(tmp_path):
    root = str(tmp_path / "cache")
    results, errors = [], []

    def work():
        try:
            results.append(shapes.ensure_shapes("c", 3, 9, SIZE, root=root))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    json_file, image_root = results[0]
    assert len(os.listdir(image_root)) == 3
    assert len(json.load(open(json_file))["images"]) == 3
    # only the final folder and its lock file remain: no leftover temporaries
    assert sorted(os.listdir(root)) == sorted(
        [
            os.path.basename(os.path.dirname(json_file)),
            os.path.basename(os.path.dirname(json_file)) + ".lock",
        ]
    )
    # a changed parameter gives a different folder
    assert shapes.split_dir("c", 3, 10, SIZE, root) != os.path.dirname(json_file)


def test_coco_evaluator_perfect_predictions(tmp_path):
    """Ground truth fed back as predictions scores AP 100 through COCOEvaluator."""
    import torch
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

    name = "shapes_test_eval"
    shapes.register_tiny_shapes(str(tmp_path), name=name, num_images=3, seed=21, eager=True)
    try:
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"))
        evaluator.reset()
        for d in DatasetCatalog.get(name):
            annos = d["annotations"]
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
            masks = np.stack([mask_util.decode(a["segmentation"]) for a in annos]).astype(bool)
            inst = Instances((d["height"], d["width"]))
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
            inst.scores = torch.ones(len(annos))
            inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
            inst.pred_masks = BitMasks(torch.from_numpy(masks)).tensor
            evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
        res = evaluator.evaluate()
        assert res["bbox"]["AP"] == pytest.approx(100.0)
        assert res["segm"]["AP"] == pytest.approx(100.0)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
