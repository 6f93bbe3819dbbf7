#!/usr/bin/env python
"""Scores a user can threshold: the recipes' score maps fitted with no labels, and the
precision / recall they give on the shipped models.

1. With the package defaults, on each shipped model's tuning-split images read as unlabelled
   images: the model's own map (``turbo.score_map.fit_score_map``, identity up to the score
   threshold), which its config sets as ``MODEL.TURBO.SCORE_MAP``; and for each head kind
   (Mask R-CNN, cascade) the recipe's map (``turbo.config.Recipe.score_map``, for a model
   with no map of its own), fitted on the pooled images of the shipped models of that kind.
   The page says whether ``turbo/config.py`` and the configs hold the maps this run fitted.
   For the models of ``turbo.benchmark.reference_models.CLASS_SCORE_MAPS``, their maps per
   class too (``fit_model_score_map(..., per_class=True)``, each class's own from
   ``turbo.score_map.CLASS_OWN_FROM`` up) on the images of the split named there, which their
   configs set instead.
2. For each config whose Maskness thresholds were tuned for a dataset
   (``turbo.benchmark.reference_models.TUNED_CONFIGS``),
   its own map (``turbo.score_map.fit_model_score_map``) on its tuning split, which it sets.
3. On each model's validation split: box and mask AP and precision / recall above each
   ``--thresholds`` score (IoU 0.5, pycocotools' matching) of the baseline, the package
   defaults without a map, with the recipe's map and with the model's own map (the default
   of its config), the same detections kept at the baseline's detection count above each
   score (``turbo.benchmark.breakdown.count_matched_thresholds``: a gap left there is the
   ranking's, which no map shared by all classes changes), the model's maps per class where
   they are fitted (and the same at the baseline's count: their ranking), and the tuned
   config with its map.

The baseline and the default with its config's map on each domain's larger validation split
(``shapes_val_large``, ``scenes_val_large``), where a cell moves less from one set of images
to another, with each difference's spread over the images: ``scripts/benchmark.py
--score-pr`` on that split::

    python scripts/score_map.py --output docs/results/score_map.md
"""

import importlib.util
import runpy

# Detectron2 warns while it is imported, and importing turbo imports it: this program's filters
# for the known notices go in first, from turbo's standard-library module run by its path.
runpy.run_path(
    importlib.util.find_spec("turbo").submodule_search_locations[0] + "/third_party_warnings.py"
)["silence_known_warnings"]()

import argparse
import json
import os
import sys
import time

import torch

from turbo.benchmark.reference_models import (
    CLASS_SCORE_MAPS,
    REFERENCE_MODELS,
    REPO_ROOT,
    TUNED_CONFIGS,
)

# the row of the own map's detections kept at the baseline's detection counts
COUNT_MATCHED = "the same, at the baseline's detection count above each score"
# the domain's tuning split of each reference model's validation split
FIT_SPLIT = {"shapes_val": "shapes_tune", "scenes_val": "scenes_tune"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--reference",
        nargs="+",
        default=[n for n in REFERENCE_MODELS if n != "panoptic_fpn"],  # the instance models
    )
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--max-images", type=int, default=0, help="per split; 0 = all")
    p.add_argument("--output", default="")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def knot_list(knots):
    return json.dumps([list(k) for k in knots])


def main(argv=None):
    a = parse_args(argv)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger

    from turbo.benchmark.accuracy import evaluate_variants
    from turbo.benchmark.breakdown import (
        ap_on_images,
        count_matched_thresholds,
        load_coco_gt,
        precision_recall,
    )
    from turbo.benchmark.reference_models import reference_model
    from turbo.benchmark.runner import inference_loader
    from turbo.benchmark.variants import Variant
    from turbo.build import load_config, load_model
    from turbo.config import CASCADE_RECIPE, IDENTITY_MAP, TurboParams, is_class_score_map
    from turbo.datasets import register_synthetic_datasets
    from turbo.score_map import (
        CLASS_OWN_FROM,
        KNOT_TOLERANCE,
        collect_scores,
        fit_model_score_map,
        fit_score_map,
        same_score_map,
    )

    log = setup_logger(name="turbo", abbrev_name="turbo")
    register_synthetic_datasets()
    t0 = time.perf_counter()

    def dicts(split):
        d = DatasetCatalog.get(split)
        return d[: a.max_images] if a.max_images > 0 else d

    models = {}
    for name in a.reference:
        label, config, weights = reference_model(name)
        cfg, model = load_model(config, weights, a.device)
        models[name] = (label, config, cfg, model)

    # 1. the recipes' maps, pooled over the models of each head kind, package defaults
    pooled, kinds, own_maps = {}, {}, {}
    for name, (label, _, cfg, model) in models.items():
        heads = model.roi_heads
        recipe = heads.recipe()
        kind = "CASCADE_RECIPE" if recipe == CASCADE_RECIPE else "MASK_RCNN_RECIPE"
        kinds[name] = (kind, recipe)
        default = TurboParams(score_map=IDENTITY_MAP).resolved(recipe)
        with heads.turbo_params(default):
            base, turbo = collect_scores(
                model, inference_loader(cfg, dicts(FIT_SPLIT[cfg.DATASETS.TEST[0]]))
            )
        floor = float(heads.final_box_predictor().test_score_thresh)
        own_maps[name] = fit_score_map(base, turbo, floor=floor)
        got = pooled.setdefault(
            kind, {"base": [], "turbo": [], "floor": floor, "recipe": recipe, "labels": []}
        )
        got["base"].append(base)
        got["turbo"].append(turbo)
        got["labels"].append(f"{label} on {FIT_SPLIT[cfg.DATASETS.TEST[0]]}")
        log.info("%s: scores collected (%.0f s)", label, time.perf_counter() - t0)
    recipe_maps, notes = {}, []
    for kind, got in pooled.items():
        knots = fit_score_map(torch.cat(got["base"]), torch.cat(got["turbo"]), floor=got["floor"])
        recipe_maps[kind] = knots
        holds = same_score_map(got["recipe"].score_map, knots)
        held = "holds this map" if holds else "does NOT hold this map"
        notes.append(
            f"- `{kind}.score_map`, fitted on {', '.join(got['labels'])} (turbo/config.py "
            f"{held}): `{knot_list(knots)}`"
        )
    class_maps, config_maps = {}, {}
    for name, (label, config, cfg, model) in models.items():
        config_map = config_maps[name] = TurboParams.from_cfg(cfg).score_map or ()
        if name in CLASS_SCORE_MAPS:
            split = CLASS_SCORE_MAPS[name]
            recipe = kinds[name][1]
            with model.roi_heads.turbo_params(TurboParams(score_map=IDENTITY_MAP).resolved(recipe)):
                knots = fit_model_score_map(
                    model, inference_loader(cfg, dicts(split)), per_class=True
                )
            class_maps[name] = knots
            held = same_score_map(config_map, knots)
            sets = "sets these maps" if held else "does NOT set these maps"
            if not is_class_score_map(config_map):
                sets = "sets one map for all classes instead"
            notes.append(
                f"- {label}, package defaults, one map per class from {CLASS_OWN_FROM:g} up "
                f"(below it the map of all classes) fitted on {split} "
                f"(`{os.path.relpath(config, REPO_ROOT)}` {sets}): "
                f"`{json.dumps([[list(k) for k in m] for m in knots])}`"
            )
            log.info("%s: maps per class fitted (%.0f s)", label, time.perf_counter() - t0)
        held = same_score_map(config_map, own_maps[name])
        sets = "sets this map" if held else "does NOT set this map"
        if is_class_score_map(config_map):
            sets = "sets its maps per class instead"
        notes.append(
            f"- {label}, package defaults, fitted on {FIT_SPLIT[cfg.DATASETS.TEST[0]]} "
            f"(`{os.path.relpath(config, REPO_ROOT)}` {sets}): `{knot_list(own_maps[name])}`"
        )
    # 2. the maps of the configs with tuned thresholds
    tuned = {}
    for name, (label, _, _, model) in models.items():
        if name not in TUNED_CONFIGS:
            continue
        config = os.path.join(REPO_ROOT, TUNED_CONFIGS[name])
        cfg = load_config(config)
        params = TurboParams.from_cfg(cfg)
        with model.roi_heads.turbo_params(params.replace(score_map=IDENTITY_MAP)):
            knots = fit_model_score_map(
                model, inference_loader(cfg, dicts(FIT_SPLIT[cfg.DATASETS.TEST[0]]))
            )
        tuned[name] = params.replace(score_map=knots)
        set_now = same_score_map(params.score_map or (), knots)
        notes.append(
            f"- {label}, `{TUNED_CONFIGS[name]}` (its tuned Maskness thresholds; the config "
            f"{'sets this map' if set_now else 'does NOT set this map'}): `{knot_list(knots)}`"
        )
        log.info("%s: tuned config's map fitted (%.0f s)", label, time.perf_counter() - t0)

    # 3. precision / recall on the validation splits
    ts = a.thresholds
    head = (
        "| model (val split) | setting | box AP | mask AP | "
        + " | ".join(f"box P / R @ {t:g}" for t in ts)
        + " | "
        + " | ".join(f"mask P / R @ {t:g}" for t in ts)
        + " |"
    )
    lines = [head, "|" + "---|" * (4 + 2 * len(ts))]
    for name, (label, _, cfg, model) in models.items():
        kind, recipe = kinds[name]
        heads = model.roi_heads
        val = cfg.DATASETS.TEST[0]
        default = TurboParams(score_map=recipe_maps[kind]).resolved(recipe)
        off = {"enabled": False}
        base = Variant("baseline", "m", default.replace(num_iters=0, soft_nms=off), "baseline")
        own_params = default.replace(score_map=own_maps[name])
        per_class_config = is_class_score_map(config_maps[name])
        own_name = "default, the model's own score map"
        if per_class_config:  # the config's are the maps per class, a row of their own
            own_name = f"default, one map for all classes (fitted on {FIT_SPLIT[val]})"
        own = Variant(own_name, "m", own_params, "own")
        rows = [
            base,
            Variant("default, no score map", "m", default.replace(score_map=IDENTITY_MAP), "x"),
            Variant("default (recipe's score map)", "m", default, "default"),
            own,
        ]
        per_class = None
        if name in class_maps:
            fitted = f"from {CLASS_OWN_FROM:g} up, fitted on {CLASS_SCORE_MAPS[name]}"
            per_class = Variant(
                f"default, the model's own maps per class (its config's; {fitted})"
                if per_class_config
                else f"default, maps per class ({fitted}; not its config's)",
                "m",
                default.replace(score_map=class_maps[name]),
                "class",
            )
            rows.append(per_class)
        if name in tuned:
            rows.append(
                Variant("tuned config, its own score map", "m", tuned[name].resolved(recipe), "t")
            )
        res = evaluate_variants(
            {"m": model}, rows, inference_loader(cfg, dicts(val)), val, keep_predictions=True
        )
        gt = load_coco_gt(MetadataCatalog.get(val).json_file)
        ids = [d["image_id"] for d in dicts(val)]
        base_pr, own_pr = (res[v.name]["predictions"] for v in (base, own))
        same = {t: t for t in ts}
        measured = [(v.name, res[v.name]["predictions"], same) for v in rows]
        # the own map's detections kept at the baseline's detection counts: what a perfectly
        # count-matched map would give; a gap left there is the ranking's, which no shared
        # map changes
        matched = count_matched_thresholds(base_pr, own_pr, ts)
        measured.insert(rows.index(own) + 1, (COUNT_MATCHED, own_pr, matched))
        if per_class is not None:  # the same for the maps per class, whose ranking differs
            class_pr = res[per_class.name]["predictions"]
            matched = count_matched_thresholds(base_pr, class_pr, ts)
            at = [m[0] for m in measured].index(per_class.name) + 1
            measured.insert(at, (COUNT_MATCHED, class_pr, matched))
        for row_name, pr, at in measured:
            cells = []
            for task in ("bbox", "segm"):
                got = precision_recall(gt, pr, task, list(at.values()), img_ids=ids)
                cells += [f"{got[at[t]][0]:.1f} / {got[at[t]][1]:.1f}" for t in ts]
            box, mask = (ap_on_images(gt, pr, task, ids) for task in ("bbox", "segm"))
            lines.append(
                f"| {label} ({val}) | {row_name} | {box:.2f} | {mask:.2f} | "
                + " | ".join(cells)
                + " |"
            )
        log.info("%s done (%.0f s)", label, time.perf_counter() - t0)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(
        [
            f"`python scripts/score_map.py {command}`".replace(" `", "`"),
            "",
            f"Device {a.device}, {time.perf_counter() - t0:.0f} s. Precision / recall (%) of the "
            "detections kept above each score, a true positive matched at IoU 0.5 as COCO AP "
            "matches it. The maps are fitted on the tuning splits' images (no labels read) and "
            'measured on the validation splits. The row "' + COUNT_MATCHED + '" keeps, '
            "above each score t, as many of the own map's detections as the baseline keeps "
            "above t: a perfectly count-matched map; a gap left there is the ranking's.",
            "",
            *lines,
            "",
            "The maps (knots (x, y): Turbo's rescored score x is mapped to y; a config holds a "
            f"map when each of its knots is within {KNOT_TOLERANCE:g} of the fitted one: "
            "another build or CPU rounds the scores otherwise, `turbo.score_map.KNOT_TOLERANCE`):",
            "",
            *notes,
            "",
        ]
    )
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
