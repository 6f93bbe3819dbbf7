"""turbo.config: the MODEL.TURBO keys, TurboParams, recipe resolution and validation, in the
yacs and the LazyConfig systems (errors name the key as the user wrote it)."""

import dataclasses

import pytest
from detectron2 import model_zoo
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_backbone
from omegaconf import OmegaConf

from turbo import SoftNMSParams, TurboCascadeROIHeads, TurboParams, TurboROIHeads, ops
from turbo.build import get_turbo_cfg
from turbo.config import (
    AUTO,
    AUTO_ITERS,
    CASCADE_RECIPE,
    MASK_RCNN_RECIPE,
    RECIPE_KEYS,
    REMOVED_KEYS,
    add_turbo_config,
    yacs_key,
)
from turbo.lazy import use_turbo

from helpers import build, tiny_cfg

HEADS = ["TurboROIHeads", "TurboCascadeROIHeads"]

# (yacs key, bad value, lazy path): every key with a value it must refuse
BAD = [
    ("NUM_ITERS", -2, "num_iters"),
    ("NUM_ITERS", 1.5, "num_iters"),
    ("BOX_THRESH", 1.5, "box_thresh"),
    ("MASKNESS_THRESH", -0.2, "maskness_thresh"),
    ("MASKNESS_WEIGHT", 2.0, "maskness_weight"),
    ("BOX_FUSION", -0.5, "box_fusion"),
    ("EMPTY_MASK", "ignore", "empty_mask"),
    ("MASKNESS_SOURCE", "mid", "maskness_source"),
    ("REPREDICT_TOPK", -3, "repredict_topk"),
    ("REPREDICT_MIN_SCORE", 1.5, "repredict_min_score"),
    ("REPREDICT_MIN_SCORE", -0.1, "repredict_min_score"),
    ("MASK_EDGE", "half", "mask_edge"),
    ("SOFT_NMS.ENABLED", "on", "soft_nms.enabled"),
    ("SOFT_NMS.METHOD", "cubic", "soft_nms.method"),
    ("SOFT_NMS.IOU_THRESH", 1.01, "soft_nms.iou_thresh"),
    ("SOFT_NMS.SIGMA", 0.0, "soft_nms.sigma"),
    ("SOFT_NMS.MIN_SCORE", -1.0, "soft_nms.min_score"),
]


def test_yacs_node_holds_the_dataclass_defaults():
    cfg = get_turbo_cfg()
    t, d = cfg.MODEL.TURBO, TurboParams()
    for f in dataclasses.fields(TurboParams):
        if f.name == "soft_nms":
            for g in dataclasses.fields(SoftNMSParams):
                assert t.SOFT_NMS[g.name.upper()] == getattr(d.soft_nms, g.name)
        elif f.name in RECIPE_KEYS:
            assert t[f.name.upper()] == AUTO and getattr(d, f.name) is None
        elif f.name == "num_iters":  # unset: 1 with a mask head, 0 without
            assert t.NUM_ITERS == AUTO_ITERS and type(t.NUM_ITERS) is int and d.num_iters is None
        elif f.name == "score_map":  # unset: a list, the type yacs lets a file override with
            assert t.SCORE_MAP == [] and d.score_map is None
        else:
            assert t[f.name.upper()] == getattr(d, f.name), f.name
    # one home for the Soft-NMS defaults: the ops' function defaults are the config's
    assert (d.soft_nms.iou_thresh, d.soft_nms.sigma, d.soft_nms.min_score) == (
        ops.SOFT_NMS_IOU_THRESH,
        ops.SOFT_NMS_SIGMA,
        ops.SOFT_NMS_MIN_SCORE,
    )
    defaults = ops.batched_soft_nms.__defaults__
    assert (defaults[1], defaults[2], defaults[3]) == (
        d.soft_nms.iou_thresh,
        d.soft_nms.sigma,
        d.soft_nms.min_score,
    )


def test_add_turbo_config_merges_every_key_from_a_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "VERSION: 2\nMODEL:\n  MASK_ON: True\n  TURBO:\n    NUM_ITERS: 2\n    BOX_THRESH: 0.3\n"
        "    REPREDICT_TOPK: 5\n    MASK_EDGE: half_interior\n"
        "    SOFT_NMS:\n      METHOD: gaussian\n"
    )
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_turbo_config(cfg)
    cfg.merge_from_file(str(f))
    p = TurboParams.from_cfg(cfg)
    assert (p.num_iters, p.box_thresh, p.repredict_topk, p.mask_edge) == (
        2,
        0.3,
        5,
        "half_interior",
    )
    assert p.soft_nms.method == "gaussian" and p.maskness_thresh is None


@pytest.mark.parametrize(
    "head,recipe", [(TurboROIHeads, MASK_RCNN_RECIPE), (TurboCascadeROIHeads, CASCADE_RECIPE)]
)
def test_recipes_resolve_per_head_class(head, recipe):
    assert head.recipe() == recipe
    # (tiny_cfg sets the published mechanisms; unset those that are recipe keys)
    unset = {yacs_key(k): AUTO for k in RECIPE_KEYS}
    m = build(tiny_cfg(head.__name__, **unset))
    for k in RECIPE_KEYS:
        assert getattr(m.roi_heads.turbo, k) == getattr(recipe, k)
    # a value set in the config wins over the recipe
    m = build(tiny_cfg(head.__name__, **{"MODEL.TURBO.BOX_THRESH": 0.3}))
    assert m.roi_heads.turbo.box_thresh == 0.3
    assert m.roi_heads.turbo.maskness_thresh == recipe.maskness_thresh
    # every recipe key is a number in [0, 1], unset at -1 in yacs
    assert all(0.0 <= getattr(recipe, k) <= 1.0 for k in RECIPE_KEYS)


@pytest.mark.parametrize("head", [TurboROIHeads, TurboCascadeROIHeads])
def test_direct_construction_takes_the_head_recipe(head):
    """Built through __init__ (as LazyConfig's instantiate does), not from_config."""
    cfg = tiny_cfg(head.__name__)
    kwargs = head.from_config(cfg, build_backbone(cfg).output_shape())
    for turbo in (None, TurboParams(), {"num_iters": 2}, TurboParams(box_thresh=AUTO)):
        kwargs["turbo"] = turbo
        p = head(**kwargs).turbo
        assert p.unresolved == ()
        assert p.box_thresh == head.recipe().box_thresh
        assert p.maskness_weight == head.recipe().maskness_weight
    kwargs["turbo"] = {"num_iters": 2, "soft_nms": {"enabled": False}}
    p = head(**kwargs).turbo
    assert p.num_iters == 2 and not p.soft_nms.enabled


@pytest.mark.parametrize("key,value,path", BAD)
@pytest.mark.parametrize("head", HEADS)
def test_bad_yacs_value_is_refused_naming_the_yacs_key(head, key, value, path):
    with pytest.raises(ValueError, match="MODEL.TURBO." + key.replace(".", r"\.") + " must be"):
        build(tiny_cfg(head, **{"MODEL.TURBO." + key: value}))


@pytest.mark.parametrize("key,value,path", BAD)
def test_bad_python_value_is_refused_naming_the_lazy_key(key, value, path):
    want = "model.roi_heads.turbo." + path.replace(".", r"\.") + " must be"
    with pytest.raises(ValueError, match=want):
        if path.startswith("soft_nms."):
            TurboParams(soft_nms={path.split(".")[1]: value})
        else:
            TurboParams(**{path: value})


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="model.roi_heads.turbo has no key num_iter"):
        TurboParams.from_dict({"num_iter": 2})
    with pytest.raises(ValueError, match="model.roi_heads.turbo.soft_nms has no key enable"):
        TurboParams(soft_nms={"enable": False})


REMOVED = [
    "SUBPIXEL_BOXES",
    "REPREDICT_IOU",
    "RESAMPLE_MASKS",
    "MASK_FUSION",
    "REPREDICT_SCALE",
    "RESCORE_AGREEMENT",
]


@pytest.mark.parametrize("key", REMOVED)
def test_removed_yacs_key_is_named_as_removed(key, tmp_path):
    """A config file, a command-line override and a Python assignment that set a removed key
    all fail naming the key and saying it was removed."""
    assert set(k.lower() for k in REMOVED) == set(REMOVED_KEYS)
    cfg = get_turbo_cfg()
    assert key not in cfg.MODEL.TURBO
    path = tmp_path / "old.yaml"
    path.write_text(f"MODEL:\n  TURBO:\n    {key}: 1\n")
    with pytest.raises(
        KeyError, match=f"MODEL.TURBO.{key} was renamed to nothing .the key was removed"
    ):
        cfg.merge_from_file(str(path))
    with pytest.raises(KeyError, match=f"MODEL.TURBO.{key} was renamed to nothing"):
        get_turbo_cfg().merge_from_list([f"MODEL.TURBO.{key}", "1"])
    cfg = get_turbo_cfg()
    cfg.MODEL.TURBO[key] = 1  # yacs lets Python add keys: the heads refuse them
    with pytest.raises(ValueError, match=f"MODEL.TURBO.{key} was removed: "):
        TurboParams.from_cfg(cfg)


@pytest.mark.parametrize("key", REMOVED)
def test_removed_python_key_is_named_as_removed(key):
    name = key.lower()
    want = f"model.roi_heads.turbo.{name} was removed: "
    for make in (
        lambda: TurboParams(**{name: 1}),
        lambda: TurboParams.from_dict({name: 1}),
        lambda: TurboParams().replace(**{name: 1}),
        lambda: dataclasses.replace(TurboParams(), **{name: 1}),
    ):
        with pytest.raises(ValueError, match=want):
            make()
    cfg = model_zoo.get_config("common/models/mask_rcnn_fpn.py")
    use_turbo(cfg.model)
    LazyConfig.apply_overrides(cfg, [f"model.roi_heads.turbo.{name}=1"])
    with pytest.raises(ValueError, match=want):
        instantiate(cfg.model.roi_heads.turbo)


@pytest.mark.parametrize(
    "path,value",
    [("maskness_source", "last"), ("maskness_source", "mean"), ("mask_edge", "half_peak")],
)
def test_removed_values_are_named_as_removed(path, value):
    with pytest.raises(ValueError, match=f"model.roi_heads.turbo.{path} {value!r} was removed"):
        TurboParams(**{path: value})
    with pytest.raises(ValueError, match=f"MODEL.TURBO.{path.upper()} {value!r} was removed"):
        build(tiny_cfg("TurboROIHeads", **{"MODEL.TURBO." + path.upper(): value}))


def test_bad_nested_node_is_named():
    """A bad value of the nested soft_nms node gets the named error of every other key."""
    want = r"model\.roi_heads\.turbo\.soft_nms must be a SoftNMSParams or a mapping"
    for make in (
        lambda: TurboParams().replace(soft_nms=False),
        lambda: dataclasses.replace(TurboParams(), soft_nms=False),
        lambda: TurboParams(soft_nms=0.5),
    ):
        with pytest.raises(ValueError, match=want):
            make()
    with pytest.raises(ValueError, match="model.roi_heads.turbo.soft_nms has no key enable"):
        TurboParams().replace(soft_nms={"enable": False})


@pytest.mark.parametrize("head", HEADS)
def test_cycles_without_mask_head_are_refused(head):
    with pytest.raises(
        ValueError, match="MODEL.TURBO.NUM_ITERS is 1, but the model has no mask head"
    ):
        build(tiny_cfg(head, **{"MODEL.MASK_ON": False}))
    # Soft-NMS alone is fine on a box-only model: NUM_ITERS 0, or left at the package default
    for num_iters in (0, AUTO_ITERS):
        m = build(tiny_cfg(head, **{"MODEL.MASK_ON": False, "MODEL.TURBO.NUM_ITERS": num_iters}))
        assert not m.roi_heads.mask_on and m.roi_heads.turbo.soft_nms.enabled
        assert m.roi_heads.turbo.num_iters == 0
    # with a mask head the package default is one cycle
    m = build(tiny_cfg(head, **{"MODEL.TURBO.NUM_ITERS": AUTO_ITERS}))
    assert m.roi_heads.turbo.num_iters == 1
    with m.roi_heads.turbo_params(TurboParams()):
        assert m.roi_heads.turbo.num_iters == 1


@pytest.mark.parametrize("cls", [TurboROIHeads, TurboCascadeROIHeads])
def test_direct_construction_without_mask_head(cls):
    cfg = tiny_cfg(cls.__name__)
    kwargs = cls.from_config(cfg, build_backbone(cfg).output_shape())
    for k in ("mask_in_features", "mask_pooler", "mask_head"):
        kwargs.pop(k)
    with pytest.raises(
        ValueError,
        match=r"model\.roi_heads\.turbo\.num_iters is 1, but .* has "
        "no mask head",
    ):
        cls(**kwargs)
    kwargs["turbo"] = TurboParams(num_iters=0)
    assert not cls(**kwargs).mask_on
    kwargs["turbo"] = TurboParams()  # the package defaults: Soft-NMS alone
    heads = cls(**kwargs)
    assert heads.turbo.num_iters == 0 and heads.turbo.soft_nms.enabled
    with heads.turbo_params(TurboParams()):
        assert heads.turbo.num_iters == 0
    kwargs.pop("turbo")  # no argument at all: the same
    assert cls(**kwargs).turbo.num_iters == 0


def test_turbo_params_node_in_a_lazy_config():
    """In a LazyConfig, every key is a node that command-line overrides change, for each
    head class its own recipe, and bad values are refused naming the lazy key."""
    cfg = model_zoo.get_config("common/models/cascade_rcnn.py")
    use_turbo(cfg.model, repredict_topk=3)
    node = cfg.model.roi_heads.turbo
    assert OmegaConf.is_config(node) and node.repredict_topk == 3 and node.box_thresh is None
    LazyConfig.apply_overrides(
        cfg,
        [
            "model.roi_heads.turbo.num_iters=2",
            "model.roi_heads.turbo.soft_nms.enabled=False",
            "model.roi_heads.turbo.box_fusion=0.25",
        ],
    )
    p = instantiate(cfg.model.roi_heads.turbo)
    assert isinstance(p, TurboParams)
    assert (p.num_iters, p.soft_nms.enabled, p.box_fusion, p.repredict_topk) == (2, False, 0.25, 3)
    assert p.box_thresh is None  # resolved by the head: cascade recipe
    assert p.resolved(TurboCascadeROIHeads.recipe()).box_thresh == CASCADE_RECIPE.box_thresh
    LazyConfig.apply_overrides(cfg, ["model.roi_heads.turbo.soft_nms.method=cubic"])
    with pytest.raises(
        ValueError, match=r"model\.roi_heads\.turbo\.soft_nms\.method must be one of"
    ):
        instantiate(cfg.model.roi_heads.turbo)


def test_replace_and_active():
    p = TurboParams()
    q = p.replace(num_iters=0, soft_nms={"enabled": False})
    assert not q.active and p.active and q.soft_nms.method == p.soft_nms.method
