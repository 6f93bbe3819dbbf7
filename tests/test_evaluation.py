"""The benchmark engine scores what the models output: its shared backbone, proposals and
detection stage give, for every variant, exactly the outputs of ``model(batch)`` run with that
variant's parameters."""

import os

import pytest
import torch
from detectron2.data import DatasetCatalog

from turbo.benchmark.accuracy import evaluate_variants
from turbo.benchmark.reference_models import REFERENCE_MODELS, REPO_ROOT
from turbo.benchmark.runner import inference_loader
from turbo.benchmark.variants import headline_variants, sweep_variants
from turbo.build import load_model, turbo_heads_of
from turbo.datasets import register_tiny_shapes


@pytest.mark.parametrize("reference", ["mask_rcnn", "cascade"])
def test_variants_equal_whole_model_calls(reference, tmp_path):
    name = register_tiny_shapes(root=str(tmp_path), name=f"shapes_tiny_eval_{reference}")
    dataset = os.path.splitext(os.path.basename(name))[0]
    _, cfg_file, weights = REFERENCE_MODELS[reference]
    cfg, model = load_model(
        os.path.join(REPO_ROOT, cfg_file), os.path.join(REPO_ROOT, weights), "cpu"
    )
    heads = turbo_heads_of(model)
    rows = headline_variants("m", heads.recipe(), heads.turbo)
    default = rows[3].params
    rows += sweep_variants("m", default, [{"soft_nms": {"iou_thresh": 0.3}}, {"num_iters": 2}])
    dicts = DatasetCatalog.get(dataset)
    results = evaluate_variants(
        {"m": model}, rows, inference_loader(cfg, dicts), dataset, keep_outputs=len(dicts)
    )
    batches = list(inference_loader(cfg, dicts))
    for v in rows:
        kept = results[v.name]["outputs"]
        assert len(kept) == len(dicts)
        with torch.no_grad(), heads.turbo_params(v.params):
            want = [model(b)[0]["instances"].to("cpu") for b in batches]
        for got, ref in zip(kept, want):
            got = got["instances"]
            assert len(got) == len(ref) and len(ref) > 0, v.name
            for field in ("pred_classes", "scores", "pred_masks"):
                torch.testing.assert_close(got.get(field), ref.get(field), msg=v.name)
            torch.testing.assert_close(got.pred_boxes.tensor, ref.pred_boxes.tensor)
        assert 0.0 <= results[v.name]["segm"]["AP"] <= 100.0


# ------------------------------------------------------------------------------------------
# The evaluator of each evaluator_type (turbo.evaluation)
# ------------------------------------------------------------------------------------------
def _register(name, evaluator_type, dicts, **meta):
    from detectron2.data import MetadataCatalog

    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(evaluator_type=evaluator_type, **meta)


def test_evaluator_follows_the_evaluator_type(tmp_path):
    from detectron2.evaluation import (
        COCOEvaluator,
        COCOPanopticEvaluator,
        DatasetEvaluators,
        PascalVOCDetectionEvaluator,
        SemSegEvaluator,
    )

    from turbo.build import get_turbo_cfg
    from turbo.datasets import register_tiny_shapes
    from turbo.evaluation import build_evaluator

    cfg = get_turbo_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    coco = "shapes_tiny_evaluator_choice"
    register_tiny_shapes(root=str(tmp_path), name=coco, eager=True)
    e = build_evaluator(cfg, coco)
    assert type(e) is COCOEvaluator
    assert e._output_dir == os.path.join(str(tmp_path), "inference", coco)
    stuff = {"stuff_classes": ["sky", "ground"], "ignore_label": 255}
    seg = [{"file_name": "a.png", "sem_seg_file_name": "a_seg.png", "image_id": 0}]
    _register("tiny_sem_seg_eval", "sem_seg", seg, **stuff)
    assert type(build_evaluator(cfg, "tiny_sem_seg_eval")) is SemSegEvaluator
    _register(
        "tiny_panoptic_eval",
        "coco_panoptic_seg",
        seg,
        thing_dataset_id_to_contiguous_id={1: 0},
        stuff_dataset_id_to_contiguous_id={2: 0, 3: 1},
        json_file=_json_file(coco),
        **stuff,
    )
    both = build_evaluator(cfg, "tiny_panoptic_eval")
    assert isinstance(both, DatasetEvaluators)
    assert [type(x) for x in both._evaluators] == [
        SemSegEvaluator,
        COCOEvaluator,
        COCOPanopticEvaluator,
    ]
    voc = {"dirname": str(tmp_path), "split": "val", "year": 2007, "thing_classes": ["a"]}
    _register("tiny_voc_eval", "pascal_voc", [], **voc)
    assert type(build_evaluator(cfg, "tiny_voc_eval")) is PascalVOCDetectionEvaluator
    _register("tiny_unknown_eval", "my_metric", [])
    with pytest.raises(ValueError, match="'tiny_unknown_eval' has evaluator_type 'my_metric'"):
        build_evaluator(cfg, "tiny_unknown_eval")


def _json_file(name):
    from detectron2.data import MetadataCatalog

    return MetadataCatalog.get(name).json_file


# ------------------------------------------------------------------------------------------
# Precision and recall at a score, AP on some images (turbo.benchmark.breakdown)
# ------------------------------------------------------------------------------------------
def test_precision_recall_and_ap_on_images(tmp_path):
    import json

    from turbo.benchmark.breakdown import (
        ap_on_images,
        count_matched_thresholds,
        difference_spread,
        load_coco_gt,
        objects_per_image,
        precision_recall,
        score_counts,
    )

    boxes = {1: [[0, 0, 10, 10], [20, 20, 10, 10]], 2: [[5, 5, 20, 20]]}
    gt = {
        "images": [{"id": i, "width": 50, "height": 50, "file_name": f"{i}.png"} for i in boxes],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {
                "id": 10 * i + k,
                "image_id": i,
                "category_id": 1,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": 0,
            }
            for i, bs in boxes.items()
            for k, b in enumerate(bs)
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    coco = load_coco_gt(str(path))
    assert objects_per_image(coco) == {1: 2, 2: 1}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # TP
        {"image_id": 1, "category_id": 1, "bbox": [40, 40, 5, 5], "score": 0.6},  # FP
        {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "score": 0.4},  # TP
        {"image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.8},  # TP
    ]
    pr = precision_recall(coco, dets, "bbox", [0.3, 0.5, 0.7, 0.95])
    assert pr[0.3] == pytest.approx((75.0, 100.0))
    assert pr[0.5] == pytest.approx((200 / 3, 200 / 3))
    assert pr[0.7] == pytest.approx((100.0, 200 / 3))
    assert pr[0.95] == (100.0, 0.0)  # nothing kept: no false positive, nothing found
    # count-matched thresholds: the same detections under a strictly increasing map of their
    # scores keep, at the reference's counts, the reference's precision and recall
    mapped = [dict(d, score=d["score"] ** 2 / 2) for d in dets]
    at = count_matched_thresholds(dets, mapped, [0.3, 0.5, 0.7, 0.95])
    assert at == pytest.approx({0.3: 0.08, 0.5: 0.18, 0.7: 0.32, 0.95: float("inf")})
    matched = precision_recall(coco, mapped, "bbox", list(at.values()))
    assert [matched[at[t]] for t in (0.3, 0.5, 0.7, 0.95)] == [pr[t] for t in (0.3, 0.5, 0.7, 0.95)]
    # fewer detections than the reference keeps: every one of them
    assert count_matched_thresholds(dets, mapped[:1], [0.5]) == {0.5: 0.0}
    # per image, the counts precision_recall sums
    tp, kept, n_gt = score_counts(coco, dets, "bbox", [0.5, 0.7])
    assert tp.tolist() == [[1, 1], [1, 1]] and kept.tolist() == [[2, 1], [1, 1]]
    assert n_gt.tolist() == [2, 1]
    nothing = score_counts(coco, [], "bbox", [0.5])
    assert [c.tolist() for c in nothing] == [[[0], [0]], [[0], [0]], [2, 1]]
    # the spread over images of a difference: none between a variant and itself; a false
    # positive more on one image moves precision, not recall, in every resample
    base = score_counts(coco, dets, "bbox", [0.5])
    assert [x.tolist() for x in difference_spread(base, base)] == [[0.0], [0.0]]
    extra = dets + [{"image_id": 2, "category_id": 1, "bbox": [30, 30, 5, 5], "score": 0.7}]
    sd_p, sd_r = difference_spread(base, score_counts(coco, extra, "bbox", [0.5]))
    assert sd_p[0] > 1.0 and sd_r[0] == 0.0
    assert difference_spread(base, score_counts(coco, extra, "bbox", [0.5]))[0] == sd_p
    with pytest.raises(ValueError, match="same images and thresholds"):
        difference_spread(base, score_counts(coco, dets, "bbox", [0.5, 0.7]))
    only_2 = precision_recall(coco, dets, "bbox", [0.5], img_ids=[2])
    assert only_2[0.5] == pytest.approx((100.0, 100.0))
    assert ap_on_images(coco, dets, "bbox", [2]) == pytest.approx(100.0)
    assert ap_on_images(coco, dets, "bbox", [1]) < 100.0
