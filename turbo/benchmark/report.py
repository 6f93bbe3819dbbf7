"""Benchmark results as a Markdown table and a JSON document."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Dict, Mapping, Optional, Sequence

from .breakdown import BOOTSTRAP_RESAMPLES
from .variants import Variant

__all__ = [
    "markdown_table",
    "score_threshold_table",
    "results_json",
    "median_latency",
    "relative_latency",
    "model_baselines",
    "headline_table",
    "HEADLINE_BEGIN",
    "HEADLINE_END",
]


def median_latency(samples: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    """Median seconds per call of each variant's timing samples."""
    return {name: statistics.median(t) for name, t in samples.items()}


def model_baselines(variants: Sequence[Variant]) -> Dict[str, str]:
    """{variant name: the name of its model's baseline row, the model's first row}."""
    first: Dict[str, str] = {}
    for v in variants:
        first.setdefault(v.model, v.name)
    return {v.name: first[v.model] for v in variants}


def relative_latency(
    variants: Sequence[Variant], samples: Mapping[str, Sequence[float]]
) -> Dict[str, float]:
    """Each variant's latency over its model's baseline row (the model's first row): the
    median over rounds of the ratio of its call to the baseline's call on the same batch in
    the same round (``samples`` as :func:`turbo.benchmark.timing.latency_samples` gives
    them). A ratio of two medians would compare different images and moments of the machine
    when their costs spread; the per-round ratio cancels both."""
    base = model_baselines(variants)
    return {
        v.name: statistics.median(
            t / b for t, b in zip(samples[v.name], samples[base[v.name]], strict=True)
        )
        for v in variants
        if v.name in samples and base[v.name] in samples
    }


def markdown_table(
    variants: Sequence[Variant],
    results: Dict[str, dict],
    samples: Optional[Mapping[str, Sequence[float]]] = None,
    masks: bool = True,
) -> str:
    """One row per variant: box (and mask) AP, AP50, AP75, detections per image, latency
    relative to the model's baseline (:func:`relative_latency`) and median ms per image, from
    the timing ``samples`` (:func:`turbo.benchmark.timing.latency_samples`)."""
    samples = samples or {}
    latency, rel = median_latency(samples), relative_latency(variants, samples)
    cols = ["variant", "box AP"] + (["mask AP"] if masks else []) + ["box AP50", "box AP75"]
    cols += (["mask AP50", "mask AP75"] if masks else []) + [
        "dets/img",
        "latency (x baseline)",
        "ms/img",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for v in variants:
        r = results[v.name]
        cells = [v.name, f"{r['bbox']['AP']:.2f}"]
        cells += [f"{r['segm']['AP']:.2f}"] if masks else []
        cells += [f"{r['bbox']['AP50']:.2f}", f"{r['bbox']['AP75']:.2f}"]
        cells += [f"{r['segm']['AP50']:.2f}", f"{r['segm']['AP75']:.2f}"] if masks else []
        cells += [
            f"{r['dets_per_image']:.1f}",
            f"{rel[v.name]:.3f}" if v.name in rel else "n/a",
            f"{latency[v.name] * 1e3:.1f}" if v.name in latency else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def score_threshold_table(
    variants: Sequence[Variant], results: Dict[str, dict], tasks: Sequence[str] = ("bbox", "segm")
) -> str:
    """One row per variant: precision / recall (%) of its detections at each score threshold
    of ``results[name]["score_pr"]`` ({task: {threshold: (precision, recall)}}, from
    :func:`turbo.benchmark.breakdown.precision_recall`), boxes then masks. Where the variants
    carry "score_pr_spread" (``add_precision_recall(..., reference=model_baselines(...))``),
    a second table follows: each variant's precision / recall minus its model's baseline's,
    in points, each with its standard deviation over the images."""
    names = {"bbox": "box", "segm": "mask"}
    thresholds = list(results[variants[0].name]["score_pr"][tasks[0]])
    cols = ["variant"] + [f"{names[t]} P / R @ {s:g}" for t in tasks for s in thresholds]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for v in variants:
        pr = results[v.name]["score_pr"]
        cells = [v.name] + ["{:.1f} / {:.1f}".format(*pr[t][s]) for t in tasks for s in thresholds]
        lines.append("| " + " | ".join(cells) + " |")
    spread = [v for v in variants if "score_pr_spread" in results[v.name]]
    if not spread:
        return "\n".join(lines)
    base = model_baselines(variants)
    lines += [
        "",
        "Minus the model's baseline, in points: precision / recall, each ± its standard "
        f"deviation over the images (paired bootstrap, {BOOTSTRAP_RESAMPLES} resamples)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for v in spread:
        pr, ref = results[v.name]["score_pr"], results[base[v.name]]["score_pr"]
        sd = results[v.name]["score_pr_spread"]
        cells = [v.name] + [
            " / ".join(f"{pr[t][s][i] - ref[t][s][i]:+.2f} ± {sd[t][s][i]:.2f}" for i in (0, 1))
            for t in tasks
            for s in thresholds
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_json(
    variants: Sequence[Variant],
    results: Dict[str, dict],
    samples: Optional[Mapping[str, Sequence[float]]] = None,
    **header,
) -> str:
    """The rows (name, model, kind, params, metrics, median latency in seconds and relative
    to the model's baseline) and ``header`` fields as JSON."""
    samples = samples or {}
    latency, rel = median_latency(samples), relative_latency(variants, samples)
    rows = [
        {
            "name": v.name,
            "model": v.model,
            "kind": v.kind,
            "params": dataclasses.asdict(v.params),
            **{
                k: results[v.name][k]
                for k in ("bbox", "segm", "score_pr", "score_pr_spread")
                if k in results[v.name]
            },
            "dets_per_image": results[v.name]["dets_per_image"],
            "latency_s": latency.get(v.name),
            "latency_x_baseline": rel.get(v.name),
        }
        for v in variants
    ]
    return json.dumps({**header, "rows": rows}, indent=1, default=float)


# The README's results table: (JSON at the default score threshold, JSON at 100 detections
# per image), each written by ``scripts/benchmark.py`` into docs/results/.
HEADLINE_SOURCES = (
    ("benchmark.json", "benchmark_100dets.json"),
    ("benchmark_scenes.json", "benchmark_scenes_100dets.json"),
)
HEADLINE_BEGIN = (
    "<!-- results table: written by python scripts/update_docs.py from docs/results -->"
)
HEADLINE_END = "<!-- end of results table -->"


def headline_table(results_dir: str) -> str:
    """The README's results table, from the benchmark JSON files of ``results_dir``
    (:data:`HEADLINE_SOURCES`): per model, the baseline and the package default at the
    default score threshold, with box recall above scores 0.5 and 0.7, and the latency at 100
    detections per image; and the published recipe where the default departs from it (a
    default that equals it says so)."""
    lines = [
        "| model (val split) | setting | box AP | mask AP | box recall @ 0.5 / 0.7 | "
        "latency (x baseline) | at 100 dets/img |",
        "|---|---|---|---|---|---|---|",
    ]
    for main, hundred in HEADLINE_SOURCES:
        with open(os.path.join(results_dir, main)) as f:
            doc = json.load(f)
        with open(os.path.join(results_dir, hundred)) as f:
            at_100 = {(r["model"], r["kind"]): r for r in json.load(f)["rows"]}
        for r in doc["rows"]:
            if r["kind"] not in ("baseline", "default", "published"):
                continue
            setting = {"baseline": "baseline", "published": "published recipe"}.get(r["kind"])
            if r["kind"] == "default":
                setting = "**default**" + (" (published)" if "published" in r["name"] else "")
            recall = r["score_pr"]["bbox"]
            lat100 = at_100[(r["model"], r["kind"])]["latency_x_baseline"]
            lines.append(
                f"| {r['model']} ({doc['dataset']}) | {setting} | {r['bbox']['AP']:.2f} | "
                f"{r['segm']['AP']:.2f} | {recall['0.5'][1]:.1f} / {recall['0.7'][1]:.1f} | "
                f"{r['latency_x_baseline']:.3f} | {lat100:.3f} |"
            )
    return "\n".join(lines)
