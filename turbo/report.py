"""Benchmark results as a Markdown table and a JSON document."""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, Optional, Sequence

from .variants import Variant

__all__ = ["markdown_table", "results_json", "relative_latency"]


def relative_latency(variants: Sequence[Variant], latency: Dict[str, float]) -> Dict[str, float]:
    """Each variant's latency over its model's baseline row (the model's first row)."""
    base = {}
    for v in variants:
        base.setdefault(v.model, v.name)
    return {
        v.name: latency[v.name] / latency[base[v.model]]
        for v in variants
        if v.name in latency and base[v.model] in latency
    }


def markdown_table(
    variants: Sequence[Variant],
    results: Dict[str, dict],
    latency: Optional[Dict[str, float]] = None,
    masks: bool = True,
) -> str:
    """One row per variant: box (and mask) AP, AP50, AP75, detections per image, latency
    relative to the model's baseline and in ms per image."""
    latency = latency or {}
    rel = relative_latency(variants, latency)
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


def results_json(
    variants: Sequence[Variant],
    results: Dict[str, dict],
    latency: Optional[Dict[str, float]] = None,
    **header,
) -> str:
    """The rows (name, model, kind, params, metrics, latency) and ``header`` fields as JSON."""
    latency = latency or {}
    rows = [
        {
            "name": v.name,
            "model": v.model,
            "kind": v.kind,
            "params": dataclasses.asdict(v.params),
            **{k: results[v.name][k] for k in ("bbox", "segm") if k in results[v.name]},
            "dets_per_image": results[v.name]["dets_per_image"],
            "latency_s": latency.get(v.name),
        }
        for v in variants
    ]
    return json.dumps({**header, "rows": rows}, indent=1, default=float)
