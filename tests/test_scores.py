"""Scores a user can threshold: no returned score at or below ``SCORE_THRESH_TEST`` (Soft-NMS's
decayed duplicates and rescored detections included), through ``DefaultPredictor``,
``LazyPredictor``, tracing and test-time augmentation; the score map is strictly increasing,
keeps [0, 1], changes no order and so no AP, and its label-free fit matches the baseline's
counts above each level."""

import copy
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import ROI_HEADS_REGISTRY

from turbo.benchmark.accuracy import evaluate_variants
from turbo.benchmark.reference_models import (
    CLASS_SCORE_MAPS,
    REFERENCE_MODELS,
    REPO_ROOT,
    TUNED_CONFIGS,
    reference_model,
)
from turbo.benchmark.runner import inference_loader, set_score_thresh
from turbo.benchmark.variants import Variant, default_params
from turbo.build import get_turbo_cfg, load_config, load_model
from turbo.config import (
    CASCADE_RECIPE,
    IDENTITY_MAP,
    MASK_RCNN_RECIPE,
    TurboParams,
    is_class_score_map,
)
from turbo.datasets import register_synthetic_datasets
from turbo.export import eager_outputs, trace
from turbo.ops import class_piecewise_linear, knot_table, piecewise_linear
from turbo.predictor import build_predictor
from turbo.score_map import (
    CLASS_OWN_FROM,
    KNOT_TOLERANCE,
    collect_detections,
    collect_scores,
    fit_class_score_maps,
    fit_model_score_map,
    fit_score_map,
    same_score_map,
)
from turbo.tta import TurboRCNNWithTTA

from helpers import build, tiny_cfg

KNOTS = ((0.0, 0.0), (0.1, 0.2), (0.4, 0.6), (0.7, 0.85), (1.0, 1.0))
# one map per class of the shapes models (6 classes), of different lengths
CLASS_KNOTS = (
    KNOTS,
    IDENTITY_MAP,
    ((0.0, 0.0), (0.05, 0.05), (0.3, 0.5), (1.0, 1.0)),
    ((0.0, 0.0), (0.5, 0.9), (1.0, 1.0)),
    MASK_RCNN_RECIPE.score_map,
    CASCADE_RECIPE.score_map,
)


def _images(n=3):
    register_synthetic_datasets()
    return [read_image(d["file_name"], format="BGR") for d in DatasetCatalog.get("shapes_val")[:n]]


def test_piecewise_linear_is_strictly_increasing_and_keeps_the_unit_interval():
    x = torch.linspace(0, 1, 10001)
    y = piecewise_linear(x, KNOTS)
    assert torch.all(y[1:] > y[:-1])
    assert float(y[0]) == 0.0 and float(y[-1]) == 1.0
    for kx, ky in KNOTS:
        assert float(piecewise_linear(torch.tensor([kx]), KNOTS)) == pytest.approx(ky)
    identity = ((0.0, 0.0), (1.0, 1.0))
    assert torch.allclose(piecewise_linear(x, identity), x)
    assert piecewise_linear(x.to(torch.bfloat16), KNOTS).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="at least two knots"):
        piecewise_linear(x, ((0.0, 0.0),))


def test_fit_matches_the_baseline_counts_above_each_level():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(2000, generator=g)
    turbo = torch.rand(3000, generator=g) ** 1.7 * 0.9  # lower, more of them
    knots = fit_score_map(base, turbo)
    TurboParams(score_map=knots)  # a valid MODEL.TURBO.SCORE_MAP
    mapped = piecewise_linear(turbo, knots)
    for _, y in knots[1:-1]:
        assert int((mapped > y).sum()) == int((base > y).sum()), y
    assert torch.equal(torch.argsort(mapped, stable=True), torch.argsort(turbo, stable=True))


def test_refits_that_differ_by_score_rounding_are_the_same_map():
    """A refit on scores rounded otherwise (another build, another CPU) moves knots by far less
    than ``KNOT_TOLERANCE`` and is the same map; a knot moved further, or a knot more, is not."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(2000, generator=g)
    turbo = torch.rand(3000, generator=g) ** 1.7 * 0.9
    knots = fit_score_map(base, turbo, floor=0.05)
    rounded = fit_score_map(base, turbo + 3e-7 * torch.randn(3000, generator=g), floor=0.05)
    assert same_score_map(knots, rounded)
    moved = [list(k) for k in knots]
    moved[3][0] += 2 * KNOT_TOLERANCE
    assert not same_score_map(knots, moved)
    assert not same_score_map(knots, knots[:-2] + knots[-1:])
    assert not same_score_map(knots, ())


@pytest.mark.parametrize(
    "bad",
    [
        ((0.0, 0.0), (0.5, 0.4), (0.4, 0.6), (1.0, 1.0)),  # x not increasing
        ((0.0, 0.0), (0.5, 0.6), (0.6, 0.6), (1.0, 1.0)),  # y not strictly increasing
        ((0.0, 0.1), (1.0, 1.0)),  # does not start at (0, 0)
        ((0.0, 0.0),),
        ("0, 0", "1, 1"),
    ],
)
def test_bad_score_maps_are_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match="model.roi_heads.turbo.score_map must be"):
        TurboParams(score_map=bad)


@pytest.fixture(scope="module")
def shipped():
    _, config, weights = reference_model("mask_rcnn")
    return config, weights


def _outputs_with_and_without(shipped, knots, thresh=None):
    """On 6 shapes_val images, the default with ``knots`` as its map against the same without a
    map: AP asserted identical; returns the (unmapped, mapped) ``Instances`` of each image.
    ``thresh``: the score threshold to run at (default: the model's)."""
    register_synthetic_datasets()
    cfg, model = load_model(*shipped, "cpu")
    if thresh is not None:
        set_score_thresh(model, thresh)
    default = TurboParams().resolved(model.roi_heads.recipe())
    rows = [
        Variant("unmapped", "m", default.replace(score_map=IDENTITY_MAP)),
        Variant("mapped", "m", default.replace(score_map=knots)),
    ]
    dicts = DatasetCatalog.get("shapes_val")[:6]
    res = evaluate_variants(
        {"m": model}, rows, inference_loader(cfg, dicts), "shapes_val", keep_outputs=6
    )
    for task in ("bbox", "segm"):
        assert res["mapped"][task]["AP"] == res["unmapped"][task]["AP"], task
    return [
        (a["instances"], b["instances"])
        for a, b in zip(res["unmapped"]["outputs"], res["mapped"]["outputs"])
    ]


def _assert_map_keeps_detections_and_ap(shipped, knots, thresh=None):
    """AP identical with and without ``knots`` (None: the recipe's map), and per image the same
    detections (boxes, order) with the mapped scores."""
    knots = knots or MASK_RCNN_RECIPE.score_map
    for a, b in _outputs_with_and_without(shipped, knots, thresh):
        assert len(a) == len(b) > 0
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        torch.testing.assert_close(b.scores, piecewise_linear(a.scores, knots))


def test_class_maps_map_each_row_by_its_class_and_keep_the_unit_interval():
    """Each row mapped as ``piecewise_linear`` maps it with its class's knots (up to float
    rounding): strictly increasing per class, 0 -> 0 and 1 -> 1, whatever the maps' lengths."""
    table = knot_table(CLASS_KNOTS)
    assert table.shape == (6, max(len(m) for m in CLASS_KNOTS), 2)
    x = torch.linspace(0, 1, 3001).repeat(6)
    classes = torch.arange(6).repeat_interleave(3001)
    y = class_piecewise_linear(x, classes, table)
    for c, knots in enumerate(CLASS_KNOTS):
        rows = classes == c
        torch.testing.assert_close(y[rows], piecewise_linear(x[rows], knots), atol=3e-7, rtol=0)
        assert torch.all(y[rows][1:] > y[rows][:-1]), c
        assert float(y[rows][0]) == 0.0 and float(y[rows][-1]) == 1.0
    assert class_piecewise_linear(x[:0], classes[:0], table).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        class_piecewise_linear(x, classes[:5], table)
    with pytest.raises(ValueError, match="at least two knots"):
        knot_table([((0.0, 0.0),)])


def test_class_maps_are_validated_and_counted_against_the_heads_classes():
    """A per-class map is one valid knot list per class; a bad one is refused naming the key,
    and a count other than the heads' classes is refused naming NUM_CLASSES."""
    params = TurboParams(score_map=[[list(k) for k in m] for m in CLASS_KNOTS])  # as yacs gives
    assert params.score_map == CLASS_KNOTS and is_class_score_map(params.score_map)
    assert not is_class_score_map(KNOTS) and not is_class_score_map(None)
    bad = CLASS_KNOTS[:2] + (((0.0, 0.0), (0.6, 0.5), (0.5, 0.6), (1.0, 1.0)),)
    with pytest.raises(ValueError, match="model.roi_heads.turbo.score_map must be"):
        TurboParams(score_map=bad)
    with pytest.raises(ValueError, match="model.roi_heads.turbo.score_map must be"):
        TurboParams(score_map=(KNOTS, ()))
    cfg = tiny_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    cfg.MODEL.TURBO.SCORE_MAP = [[list(k) for k in m] for m in CLASS_KNOTS[:4]]
    with pytest.raises(ValueError, match="4 per-class maps.*6 classes.*NUM_CLASSES"):
        build(cfg)
    cfg.MODEL.TURBO.SCORE_MAP = [[list(k) for k in m] for m in CLASS_KNOTS]
    heads = build(cfg).roi_heads
    assert torch.equal(heads.class_score_knots, knot_table(CLASS_KNOTS))
    assert "class_score_knots" not in heads.state_dict()  # not saved with the weights
    with heads.turbo_params(score_map=KNOTS):
        assert heads.class_score_knots is None
    assert torch.equal(heads.class_score_knots, knot_table(CLASS_KNOTS))


def test_class_maps_change_no_order_within_a_class_and_no_ap(shipped):
    """Maps per class, at threshold 0: the unmapped scores' AP exactly (COCO AP is per class),
    and per image and class the same detections in the same order, each score mapped by its
    class's map."""
    reordered = 0
    for a, b in _outputs_with_and_without(shipped, CLASS_KNOTS, thresh=0.0):
        assert len(a) == len(b) > 0
        reordered += not torch.equal(a.pred_classes, b.pred_classes)
        for c in range(6):
            ra, rb = a[a.pred_classes == c], b[b.pred_classes == c]
            assert torch.equal(ra.pred_boxes.tensor, rb.pred_boxes.tensor), c
            mapped = class_piecewise_linear(ra.scores, ra.pred_classes, knot_table(CLASS_KNOTS))
            torch.testing.assert_close(rb.scores, mapped)
    assert reordered > 0  # the maps do reorder across classes, so the check above is one


def test_class_fit_matches_each_class_count_and_falls_back_for_few_detections():
    """Per class, a threshold at each level keeps as many Turbo detections as baseline ones;
    a class with fewer than ``min_detections`` takes the map of all classes."""
    g = torch.Generator().manual_seed(0)
    n = 4000
    base_cls = torch.randint(0, 3, (n,), generator=g)
    base = torch.rand(n, generator=g)
    turbo_cls = base_cls.clone()
    # Maskness lowers class 0 far more than class 1; class 2 has few detections
    turbo = base * torch.where(turbo_cls == 0, 0.5, 0.9)
    keep = (base_cls != 2) | (torch.arange(n) < 300)
    base, base_cls, turbo, turbo_cls = base[keep], base_cls[keep], turbo[keep], turbo_cls[keep]
    maps = fit_class_score_maps(
        base, base_cls, turbo, turbo_cls, 3, min_detections=500, own_from=0.0
    )
    assert len(maps) == 3 and maps[2] == fit_score_map(base, turbo)
    assert maps[0] != maps[1]
    mapped = class_piecewise_linear(turbo, turbo_cls, knot_table(maps))
    for c in (0, 1):
        for level in (0.2, 0.5, 0.8):
            want = int(((base_cls == c) & (base > level)).sum())
            got = int(((turbo_cls == c) & (mapped > level)).sum())
            assert abs(got - want) <= 1, (c, level, got, want)
    with pytest.raises(ValueError, match="turbo_classes must lie in"):
        fit_class_score_maps(base, base_cls, turbo, turbo_cls + 1, 3)
    with pytest.raises(ValueError, match="baseline_classes must have the shape"):
        fit_class_score_maps(base, base_cls[:-1], turbo, turbo_cls, 3)


def test_class_fit_from_a_level_shares_the_knots_below_it():
    """With ``own_from``, every class takes the shared map's knots below that level and its
    own from it up: below, a threshold keeps as many detections of all classes together as
    the baseline's, from it up as many of each class; each map stays strictly increasing,
    the shared knots right of a class's own first knot left out."""
    g = torch.Generator().manual_seed(1)
    n = 6000
    base_cls = torch.randint(0, 3, (n,), generator=g)
    base = torch.rand(n, generator=g)
    turbo_cls = base_cls.clone()

    def fit(factors, own_from):
        turbo = base * torch.tensor(factors)[turbo_cls]
        args = (base, base_cls, turbo, turbo_cls, 3)
        maps = fit_class_score_maps(*args, floor=0.05, min_detections=1, own_from=own_from)
        own = fit_class_score_maps(*args, floor=0.05, min_detections=1, own_from=0.0)
        return turbo, maps, own, fit_score_map(base, turbo, floor=0.05)

    turbo, maps, own, shared = fit([0.75, 0.9, 0.8], 0.0)
    assert maps == own
    for factors in ([0.75, 0.9, 0.8], [0.5, 0.9, 0.7]):
        turbo, maps, own, shared = fit(factors, 0.5)
        below = [k for k in shared if k[1] < 0.5]
        for m, mine in zip(maps, own):
            above = [k for k in mine if k[1] >= 0.5]
            assert list(m) == [k for k in below if k[0] < above[0][0]] + above
            assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(m, m[1:]))
        mapped = class_piecewise_linear(turbo, turbo_cls, knot_table(maps))
        for c in range(3):
            for level in (0.6, 0.8):
                want = int(((base_cls == c) & (base > level)).sum())
                got = int(((turbo_cls == c) & (mapped > level)).sum())
                assert abs(got - want) <= 1, (factors, c, level)
        if factors[0] == 0.75:  # every class keeps every shared knot below 0.5
            assert all(m[: len(below)] == tuple(below) for m in maps)
            for level in (0.2, 0.4):
                assert abs(int((mapped > level).sum()) - int((base > level).sum())) <= 1
        else:  # class 0's scores fall most: its own knot at 0.5 lies left of the shared 0.4
            assert len([k for k in maps[0] if k[1] < 0.5]) < len(below)
    with pytest.raises(ValueError, match="own_from"):
        fit_class_score_maps(base, base_cls, turbo, turbo_cls, 3, own_from=1.0)


def test_score_map_changes_no_order_and_no_ap(shipped):
    """Any map, at threshold 0 (the map keeps every score above it): the unmapped scores' AP
    exactly, and each image's detections in the same order with the mapped scores."""
    _assert_map_keeps_detections_and_ap(shipped, KNOTS, thresh=0.0)


@pytest.mark.parametrize("recipe", [MASK_RCNN_RECIPE, CASCADE_RECIPE], ids=["mask_rcnn", "cascade"])
def test_recipe_maps_are_the_identity_up_to_the_default_threshold(recipe):
    """The recipes' maps are valid maps, raise high scores (Maskness lowered them) and leave
    every score up to Detectron2's default SCORE_THRESH_TEST as it is, so that at that threshold
    the default keeps exactly the detections it keeps without a map."""
    thresh = get_turbo_cfg().MODEL.ROI_HEADS.SCORE_THRESH_TEST
    knots = recipe.score_map
    TurboParams(score_map=knots)
    assert knots != IDENTITY_MAP and knots[1] == (thresh, thresh)
    x = torch.linspace(0, 1, 2001, dtype=torch.float64)
    y = piecewise_linear(x, knots)
    low = x <= thresh
    torch.testing.assert_close(y[low], x[low], rtol=1e-12, atol=0.0)
    assert bool((y[~low] > thresh).all())
    assert float(piecewise_linear(torch.tensor([0.5, 0.7]), knots).min()) > 0.5
    assert float(piecewise_linear(torch.ones(3), knots).max()) == 1.0  # no rounding past 1
    # scores as the heads hold them (float32), next to the threshold: the map keeps exactly
    # those above it
    f = torch.tensor(thresh, dtype=torch.float32)
    near = torch.stack([f, torch.nextafter(f, f + 1), torch.nextafter(f, f - 1)])
    near = torch.cat([near, torch.rand(10000, generator=torch.Generator().manual_seed(0)) * 0.1])
    assert torch.equal(piecewise_linear(near, knots) > thresh, near > thresh)


def test_unset_map_resolves_to_the_recipes_only_for_the_recipes_rescoring():
    """Unset (None, (), yacs []) takes the recipe's map; an explicit map or the identity is
    kept; with the recipe's rescoring changed there is no map (the recipe's was fitted for
    its own rescoring)."""
    for unset in (TurboParams(), TurboParams(score_map=()), TurboParams(score_map=[])):
        assert unset.score_map is None
        assert unset.resolved(MASK_RCNN_RECIPE).score_map == MASK_RCNN_RECIPE.score_map
        assert unset.resolved(CASCADE_RECIPE).score_map == CASCADE_RECIPE.score_map
    assert TurboParams(score_map=KNOTS).resolved(CASCADE_RECIPE).score_map == KNOTS
    assert TurboParams(score_map=IDENTITY_MAP).resolved(CASCADE_RECIPE).score_map == IDENTITY_MAP
    for change in ({"maskness_weight": 0.5}, {"maskness_thresh": 0.3}, {"maskness_source": "both"}):
        assert TurboParams(**change).resolved(MASK_RCNN_RECIPE).score_map == IDENTITY_MAP, change
    cfg = get_turbo_cfg()
    assert cfg.MODEL.TURBO.SCORE_MAP == []
    assert TurboParams.from_cfg(cfg).score_map is None


INSTANCE_MODELS = [n for n in REFERENCE_MODELS if n != "panoptic_fpn"]


@pytest.mark.parametrize("name", INSTANCE_MODELS)
def test_shipped_configs_run_the_defaults_with_their_own_map(name):
    """Each shipped instance model's config is the package defaults with a score map of its
    own (not the recipe's), the identity up to its score threshold, one per class exactly for
    the models of ``CLASS_SCORE_MAPS`` (the cascades); the benchmark's
    default rows take that map (``default_params``), and the tuned configs carry maps of their
    own."""
    cfg = load_config(reference_model(name)[1])
    recipe = ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME).recipe()
    params = TurboParams.from_cfg(cfg)
    assert params.recipe_rescoring()
    params = params.resolved(recipe)
    default = TurboParams().resolved(recipe)
    thresh = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    assert params.score_map not in (default.score_map, IDENTITY_MAP)
    assert params.replace(score_map=default.score_map) == default
    per_class = is_class_score_map(params.score_map)
    assert per_class == (name in CLASS_SCORE_MAPS)
    maps = params.score_map if per_class else [params.score_map]
    assert len(maps) == (cfg.MODEL.ROI_HEADS.NUM_CLASSES if per_class else 1)
    # maps per class: one map for all below CLASS_OWN_FROM, each class's own from it up
    assert len({tuple(k for k in m if k[1] < CLASS_OWN_FROM) for m in maps}) == 1
    assert len({tuple(k for k in m if k[1] >= CLASS_OWN_FROM) for m in maps}) == len(maps)
    assert all(m[1] == (thresh, thresh) for m in maps)
    assert default_params(recipe, params) == params
    assert default_params(recipe, None) == default
    if name in TUNED_CONFIGS:
        tuned = TurboParams.from_cfg(load_config(os.path.join(REPO_ROOT, TUNED_CONFIGS[name])))
        assert not tuned.recipe_rescoring()
        tuned = tuned.resolved(recipe)
        assert tuned.score_map not in (params.score_map, IDENTITY_MAP)
        assert default_params(recipe, tuned) == default  # a map fitted for other thresholds


def test_heads_warn_where_an_unset_map_is_left_out(caplog):
    """A config that changes the rescoring without a map of its own is told to fit one."""
    cfg = tiny_cfg(**{"MODEL.TURBO.MASKNESS_WEIGHT": 0.5, "MODEL.TURBO.SCORE_MAP": []})
    with caplog.at_level(logging.WARNING, logger="turbo.heads"):
        model = build(cfg)
    assert model.roi_heads.turbo.score_map == IDENTITY_MAP
    assert "fit_score_map.py" in caplog.text and "MODEL.TURBO.SCORE_MAP is unset" in caplog.text


def test_default_map_keeps_the_thresholds_detections_and_ap(shipped):
    """At the model's own threshold (0.05), the recipe's map (identity up to it) returns the
    same detections, in the same order, as no map, with the mapped scores: AP unchanged."""
    _assert_map_keeps_detections_and_ap(shipped, None)


def _above(instances, thresh):
    return len(instances) > 0 and float(instances.scores.min()) > thresh


@pytest.mark.parametrize("thresh", [0.3, 0.5])
def test_default_predictor_honours_the_threshold(shipped, thresh):
    """Detectron2's tutorial threshold: every detection the default returns scores above it,
    as the baseline's do, Soft-NMS's decayed duplicates and rescored detections included."""
    config, weights = shipped
    cfg, _ = load_model(config, weights, "cpu")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = thresh
    predictor = build_predictor(cfg, weights, "cpu")
    for image in _images():
        assert _above(predictor(image)["instances"], thresh)
        with predictor.model.roi_heads.turbo_params(score_map=KNOTS):
            assert _above(predictor(image)["instances"], thresh)


def test_lazy_predictor_honours_the_threshold(shipped):
    _, weights = shipped
    cfg = LazyConfig.load(f"{REPO_ROOT}/configs/shapes/turbo_mask_rcnn_R18_FPN.py")
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.5
    predictor = build_predictor(cfg, weights, "cpu")
    for image in _images():
        assert _above(predictor(image)["instances"], 0.5)


@pytest.mark.filterwarnings("error::torch.jit.TracerWarning:turbo")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning:detectron2")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning:torch")
def test_traced_model_honours_the_threshold(shipped):
    _, model = load_model(*shipped, "cpu")
    set_score_thresh(model, 0.5)
    images = [torch.as_tensor(x.transpose(2, 0, 1).copy()) for x in _images()]
    adapter, traced = trace(model, images[0])
    for x in images[1:]:
        with torch.no_grad():
            out = adapter.outputs_schema(traced(x))[0]["instances"]
        assert _above(out, 0.5)
        assert len(out) == len(eager_outputs(model, x))


def test_test_time_augmentation_honours_the_threshold(shipped):
    cfg, model = load_model(*shipped, "cpu")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.5
    cfg.TEST.AUG.MIN_SIZES = (200, 256)
    set_score_thresh(model, 0.5)
    images = _images(2)
    inputs = [
        {
            "image": torch.as_tensor(x.transpose(2, 0, 1).copy()),
            "height": x.shape[0],
            "width": x.shape[1],
        }
        for x in images
    ]
    with torch.no_grad():
        out = TurboRCNNWithTTA(cfg, model, batch_size=2)(copy.deepcopy(inputs))
    for r in out:
        assert _above(r["instances"], 0.5)


def test_collect_and_fit_on_unlabelled_images(shipped):
    """The fit reads images only (no annotation); the fitted map is valid, and above each
    knot's level the mapped Turbo scores are as many as the baseline's on those images."""
    cfg, model = load_model(*shipped, "cpu")
    register_synthetic_datasets()
    dicts = [
        {"file_name": d["file_name"], "image_id": i}
        for i, d in enumerate(DatasetCatalog.get("shapes_tune")[:6])
    ]
    base, turbo = collect_scores(model, inference_loader(cfg, dicts))
    knots = fit_score_map(base, turbo)
    assert len(knots) > 3
    TurboParams(score_map=knots)
    mapped = piecewise_linear(turbo, knots)
    for _, y in knots[1:-1]:
        assert int((mapped > y).sum()) == int((base > y).sum()), y
    # with classes: the same scores, and per-class maps that match each class's counts
    (b, bc), (t, tc) = collect_detections(model, inference_loader(cfg, dicts))
    assert torch.equal(b, base) and torch.equal(t, turbo)
    assert bc.shape == b.shape and tc.shape == t.shape and int(tc.max()) < 6
    maps = fit_class_score_maps(b, bc, t, tc, 6, min_detections=1, own_from=0.0)
    assert len(set(maps)) > 1
    mapped = class_piecewise_linear(t, tc, knot_table(maps))
    for c, knots in enumerate(maps):
        for _, y in knots[1:-1]:
            want = int(((bc == c) & (b > y)).sum())
            assert int(((tc == c) & (mapped > y)).sum()) == want, (c, y)
    # each class's own knots from CLASS_OWN_FROM up, the shared map's below
    above = fit_class_score_maps(b, bc, t, tc, 6, min_detections=1)
    assert all(k in fit_score_map(b, t) for m in above for k in m if k[1] < CLASS_OWN_FROM)
    mapped = class_piecewise_linear(t, tc, knot_table(above))
    for c, knots in enumerate(above):
        for _, y in knots[1:-1]:
            if y >= CLASS_OWN_FROM:
                want = int(((bc == c) & (b > y)).sum())
                assert int(((tc == c) & (mapped > y)).sum()) == want, (c, y)
    shared = fit_model_score_map(model, inference_loader(cfg, dicts))
    assert shared == fit_score_map(b, t, floor=0.05)
    per_class = fit_model_score_map(model, inference_loader(cfg, dicts), per_class=True)
    assert per_class == (shared,) * 6  # too few detections of each class: the shared map


def test_fit_with_a_floor_is_the_identity_up_to_it():
    """With the score threshold as floor, the fitted map keeps every score up to it as it is
    (the same detections pass the threshold) and still matches the counts above it."""
    g = torch.Generator().manual_seed(1)
    base = torch.rand(2000, generator=g)
    turbo = torch.rand(3000, generator=g) ** 1.7 * 0.9
    knots = fit_score_map(base, turbo, floor=0.05)
    assert knots[:2] == ((0.0, 0.0), (0.05, 0.05)) and all(y > 0.05 for _, y in knots[2:])
    mapped = piecewise_linear(turbo.double(), knots)
    assert torch.equal(mapped > 0.05, turbo.double() > 0.05)
    for _, y in knots[2:-1]:
        assert int((mapped > y).sum()) == int((base > y).sum()), y
    with pytest.raises(ValueError, match="floor"):
        fit_score_map(base, turbo, floor=1.0)


def test_fit_command_prints_a_map_the_config_accepts(shipped):
    """projects/turbo/fit_score_map.py on three unlabelled image files prints a map that the
    config takes as MODEL.TURBO.SCORE_MAP, the identity up to its score threshold: one map,
    and with ``--per-class`` one per class (on three images every class has too few
    detections for its own, so each takes the map of all classes)."""
    config, weights = shipped
    register_synthetic_datasets()
    files = [d["file_name"] for d in DatasetCatalog.get("shapes_val")[:3]]
    command = [sys.executable, os.path.join(REPO_ROOT, "projects", "turbo", "fit_score_map.py")]
    common = ["--config-file", config, "--device", "cpu", "--input", *files]
    fitted = {}
    for flags in ([], ["--per-class"]):
        out = subprocess.run(
            command + common + flags + ["--opts", "MODEL.WEIGHTS", weights],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(x for x in out.splitlines() if "LazyConfig:" in x)
        knots = json.loads(line.split("score_map =", 1)[1])
        cfg = load_config(config, ["MODEL.TURBO.SCORE_MAP", json.dumps(knots)])
        fitted[bool(flags)] = TurboParams.from_cfg(cfg).score_map
        assert "yacs (MODEL.TURBO):" in out and "SCORE_MAP:" in out
    shared, per_class = fitted[False], fitted[True]
    assert shared[1] == (0.05, 0.05) and len(shared) > 3
    assert is_class_score_map(per_class) and per_class == (shared,) * 6
    bad = subprocess.run(
        command + ["--config-file", config, "--input", "/nonexistent/*.png"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "matches no file" in bad.stderr
    for flags, says in (
        (["--own-from", "0.5"], "needs --per-class"),
        (["--per-class", "--own-from", "1.5"], "--own-from must lie in [0, 1)"),
    ):
        bad = subprocess.run(command + common + flags, capture_output=True, text=True)
        assert bad.returncode != 0 and says in bad.stderr, flags
