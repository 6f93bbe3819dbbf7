"""Panoptic FPN with Turbo on the shapes panoptic: the dataset (COCO panoptic PNGs and json,
semantic PNGs, instances json, Detectron2's separated registration), a small random Panoptic
FPN of the shipped config (Turbo off is Detectron2's own, panoptic map included; Turbo on has
outputs of the right shapes and frames), and the measurement end to end through
``projects/turbo/train_net.py --eval-only`` and ``turbo.benchmark.panoptic``."""

import copy
import json
import os
from collections import defaultdict

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

from turbo.benchmark.panoptic import PQ_KEYS, evaluate_merge
from turbo.benchmark.reference_models import REFERENCE_MODELS, REPO_ROOT
from turbo.benchmark.runner import inference_loader
from turbo.build import load_model
from turbo.datasets import make_panoptic, register_tiny_panoptic
from turbo.datasets.panoptic import STUFF_IDS, THING_IDS, panoptic_paths

from helpers import assert_same_instances, assert_valid_model_outputs, build, make_images, tiny_cfg

CONFIG = "shapes/turbo_panoptic_fpn_R18_FPN.yaml"
OFF = {"MODEL.TURBO.NUM_ITERS": 0, "MODEL.TURBO.SOFT_NMS.ENABLED": False}


def _read(path):
    return np.asarray(Image.open(path))


def test_dataset_files_agree(tmp_path):
    name = register_tiny_panoptic(root=str(tmp_path), name="shapes_panoptic_tiny_files")
    assert name == "shapes_panoptic_tiny_files_separated"
    meta = MetadataCatalog.get(name)
    assert not os.path.exists(meta.panoptic_json)  # generated on first use
    dicts = DatasetCatalog.get(name)
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
    stuffonly = "shapes_panoptic_tiny_files_stuffonly"
    assert MetadataCatalog.get(stuffonly).evaluator_type == "sem_seg"
    assert [d["sem_seg_file_name"] for d in DatasetCatalog.get(stuffonly)] == [
        d["sem_seg_file_name"] for d in dicts
    ]
    panoptic = json.load(open(meta.panoptic_json))
    instances = json.load(open(meta.json_file))
    isthing = {c["id"]: bool(c["isthing"]) for c in panoptic["categories"]}
    assert {i for i, t in isthing.items() if t} == set(THING_IDS)
    assert {i for i, t in isthing.items() if not t} == set(STUFF_IDS)
    assert [c["id"] for c in instances["categories"]] == list(THING_IDS)
    by_image = defaultdict(list)
    for a in instances["annotations"]:
        by_image[a["image_id"]].append(a)
    assert len(dicts) == len(panoptic["annotations"]) == len(instances["images"]) == 4
    num_stuff = []
    for ann, d in zip(panoptic["annotations"], dicts):
        assert ann["image_id"] == d["image_id"]
        ids = rgb2id(_read(os.path.join(meta.panoptic_root, ann["file_name"])))
        semantic = _read(d["sem_seg_file_name"])
        assert ids.shape == semantic.shape == (d["height"], d["width"]) == (96, 128)
        segments = ann["segments_info"]
        # every pixel is in exactly one listed segment (no void)
        assert sorted(np.unique(ids).tolist()) == sorted(s["id"] for s in segments)
        things = []
        for s in segments:
            m = ids == s["id"]
            ys, xs = np.nonzero(m)
            assert s["area"] == int(m.sum())
            assert s["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            # things are 0 in the semantic labels, stuff its contiguous id 1..3
            if isthing[s["category_id"]]:
                things.append((s["category_id"], m))
                assert np.all(semantic[m] == 0)
            else:
                label = meta.stuff_dataset_id_to_contiguous_id[s["category_id"]]
                assert label == STUFF_IDS.index(s["category_id"]) + 1
                assert np.all(semantic[m] == label)
        num_stuff.append(len(segments) - len(things))
        # the instances json holds the same things, with the same masks, in the same order
        anns = by_image[ann["image_id"]]
        assert [a["category_id"] for a in anns] == [c for c, _ in things]
        for a, (_, m) in zip(anns, things):
            assert np.array_equal(mask_util.decode(a["segmentation"]).astype(bool), m)
        # and so do the separated dataset dicts (contiguous thing ids 0..5)
        assert [a["category_id"] for a in d["annotations"]] == [c - 1 for c, _ in things]
    assert all(1 <= n <= 3 for n in num_stuff) and max(num_stuff) >= 2
    # the same bytes whatever the number of threads
    for workers in (1, 2):
        make_panoptic(str(tmp_path / f"w{workers}"), "s", 3, 5, (48, 64), num_workers=workers)
    one, two = (panoptic_paths(str(tmp_path / f"w{w}"), "s") for w in (1, 2))
    for key in ("instances_json", "panoptic_json"):
        assert open(one[key], "rb").read() == open(two[key], "rb").read()
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        for f in sorted(os.listdir(one[key])):
            assert (
                open(os.path.join(one[key], f), "rb").read()
                == open(os.path.join(two[key], f), "rb").read()
            )


# ------------------------------------------------------------------------------------------
# A small random Panoptic FPN of the shipped config
# ------------------------------------------------------------------------------------------
SMALL = {
    "MODEL.ANCHOR_GENERATOR.SIZES": [[8], [16], [32], [64]],  # p2..p5 of the shapes backbone
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,  # group norm's 32 groups
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": 64,
    # random scores: a low merge threshold lets the instances into the panoptic map
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": 0.2,
}


def _pair(**turbo):
    cfg = tiny_cfg(base=CONFIG, **SMALL, **turbo)
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    tb = build(cfg)
    upstream = tiny_cfg(base=CONFIG, **SMALL, **{"MODEL.ROI_HEADS.NAME": "StandardROIHeads"})
    return build(upstream, state_dict=tb.state_dict()), tb


def test_turbo_off_is_upstream_panoptic_fpn():
    up, tb = _pair(**OFF)
    images = make_images()
    with torch.no_grad():
        a, b = up(copy.deepcopy(images)), tb(copy.deepcopy(images))
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb) == {"instances", "sem_seg", "panoptic_seg"}
        assert_same_instances(ra["instances"], rb["instances"])
        assert torch.equal(ra["sem_seg"], rb["sem_seg"])
        (seg_a, info_a), (seg_b, info_b) = ra["panoptic_seg"], rb["panoptic_seg"]
        assert torch.equal(seg_a, seg_b) and info_a == info_b
    segments = [s for r in a for s in r["panoptic_seg"][1]]
    assert {s["isthing"] for s in segments} == {True, False}  # things and stuff were merged


def test_turbo_on_panoptic_outputs():
    _, tb = _pair(**{"MODEL.TURBO.NUM_ITERS": 1})
    assert tb.roi_heads.turbo.active
    images = make_images()
    with torch.no_grad():
        res = tb(copy.deepcopy(images))
    assert_valid_model_outputs(res, images)
    for r, x in zip(res, images):
        h, w = x["height"], x["width"]
        inst, sem = r["instances"], r["sem_seg"]
        seg, info = r["panoptic_seg"]
        assert inst.has("maskness")
        assert sem.shape == (4, h, w) and seg.shape == (h, w) and seg.dtype == torch.int32
        assert set(seg.unique().tolist()) - {0} == {s["id"] for s in info}
        labels = sem.argmax(dim=0)
        for s in info:
            region = seg == s["id"]
            if s["isthing"]:  # inside its instance's mask, with its class and score
                i = s["instance_id"]
                assert s["category_id"] == int(inst.pred_classes[i])
                assert s["score"] == float(inst.scores[i]) >= tb.combine_instances_score_thresh
                assert not (region & ~inst.pred_masks[i]).any()
            else:  # a region of its semantic class
                assert 1 <= s["category_id"] <= 3
                assert not (region & (labels != s["category_id"])).any()
    assert any(s["isthing"] for r in res for s in r["panoptic_seg"][1])


# ------------------------------------------------------------------------------------------
# The measurement, end to end on a tiny split with the shipped model
# ------------------------------------------------------------------------------------------
def test_train_net_eval_only_measures_pq(tmp_path, monkeypatch, entry_point):
    monkeypatch.setenv("TURBO_DATASETS", str(tmp_path / "data"))
    dataset = register_tiny_panoptic(eager=True)
    _, config, weights = REFERENCE_MODELS["panoptic_fpn"]
    config, weights = os.path.join(REPO_ROOT, config), os.path.join(REPO_ROOT, weights)
    args = default_argument_parser().parse_args(
        ["--config-file", config, "--eval-only", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights]
        + ["DATASETS.TEST", f"('{dataset}',)", "OUTPUT_DIR", str(tmp_path / "out")]
    )
    res = entry_point("train_net").main(args)
    assert set(res) == {"sem_seg", "bbox", "segm", "panoptic_seg"}
    pq = res["panoptic_seg"]
    assert set(PQ_KEYS) <= set(pq)
    assert all(0 <= pq[k] <= 100 for k in PQ_KEYS)
    assert pq["PQ_th"] > 0 and pq["PQ_st"] > 0  # the trained model finds things and stuff
    # evaluate_merge at the model's own threshold is the model's own merge
    cfg, model = load_model(config, weights, "cpu")
    loader = inference_loader(cfg, DatasetCatalog.get(dataset))
    thresh = cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH
    merged = evaluate_merge(model, loader, dataset, [thresh, 0.0], {"turbo": {}})["turbo"]
    assert merged["merge"][thresh]["PQ"] == pytest.approx(pq["PQ"])
    assert merged["segm"]["AP"] == pytest.approx(res["segm"]["AP"])
    kept = merged["merge"][0.0]["things_per_image"]
    assert kept >= merged["merge"][thresh]["things_per_image"] > 0
