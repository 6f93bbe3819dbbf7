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
