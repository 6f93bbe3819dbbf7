"""Pictures of Turbo's effect: baseline against Turbo side by side (the same colour for the
same object), and AP against latency with the Pareto front labelled.

Used by the benchmark, the demo and the tutorial notebook. Images are RGB ``uint8`` arrays
(H, W, 3); instances are Detectron2 outputs in the original image frame.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Instances, pairwise_iou
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

__all__ = [
    "distinct_colors",
    "match_colors",
    "draw_instances",
    "side_by_side",
    "pareto_front",
    "plot_ap_vs_latency",
    "plot_ap_vs_cycles",
]

_PALETTE = colormap(rgb=True, maximum=1)


def distinct_colors(n: int, start: int = 0) -> List[np.ndarray]:
    """``n`` RGB colours in [0, 1] from Detectron2's palette, from its ``start``-th on."""
    return [_PALETTE[i % len(_PALETTE)] for i in range(start, start + n)]


def match_colors(
    left: Instances, right: Instances, iou_thresh: float = 0.5
) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Colours for two predictions of one image, such that an object gets the same colour on
    both sides: right instances matched (greedily by box IoU, same class, best first) to a
    left one take its colour; the others get colours of their own."""
    n, m = len(left), len(right)
    left_colors = distinct_colors(n)
    right_idx = [-1] * m
    if n and m:
        iou = pairwise_iou(right.pred_boxes, left.pred_boxes)
        iou[right.pred_classes[:, None] != left.pred_classes[None, :]] = 0
        taken = set()
        for flat in torch.argsort(iou.flatten(), descending=True).tolist():
            r, le = divmod(flat, n)
            if iou[r, le] < iou_thresh:
                break
            if right_idx[r] < 0 and le not in taken:
                right_idx[r] = le
                taken.add(le)
    spare = iter(distinct_colors(m, start=n))
    right_colors = [left_colors[i] if i >= 0 else next(spare) for i in right_idx]
    return left_colors, right_colors


def _labels(inst: Instances, class_names: Optional[Sequence[str]]) -> List[str]:
    names = [class_names[c] if class_names else str(c) for c in inst.pred_classes.tolist()]
    return [f"{name} {s:.0%}" for name, s in zip(names, inst.scores.tolist())]


def _scale(image: np.ndarray) -> float:
    """Drawing scale: small images (the shapes' 256 px) are drawn at least 512 px wide, so
    that labels stay readable."""
    return max(1.0, 512.0 / max(image.shape[:2]))


def draw_instances(
    image: np.ndarray,
    inst: Instances,
    colors: Sequence[np.ndarray],
    class_names: Optional[Sequence[str]] = None,
    extra_boxes: Optional[Tuple[np.ndarray, str]] = None,
) -> np.ndarray:
    """``inst`` (boxes, masks, "class score" labels) drawn on ``image`` in ``colors``;
    ``extra_boxes``: optional ((K, 4) XYXY boxes, colour) drawn dashed beneath them (e.g. the
    detection stage's boxes). Small images are drawn enlarged (at least 512 px)."""
    vis = Visualizer(image, metadata=None, scale=_scale(image))
    if extra_boxes is not None:
        boxes, color = extra_boxes
        for b in boxes:
            vis.draw_box(b, edge_color=color, line_style="--", alpha=0.9)
    masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
    out = vis.overlay_instances(
        boxes=inst.pred_boxes.tensor.numpy(),
        masks=masks,
        labels=_labels(inst, class_names),
        assigned_colors=list(colors),
        alpha=0.4,
    )
    return out.get_image()


def side_by_side(
    image: np.ndarray,
    left: Instances,
    right: Instances,
    class_names: Optional[Sequence[str]] = None,
    score_thresh: float = 0.5,
    right_extra_boxes: Optional[np.ndarray] = None,
) -> np.ndarray:
    """``left`` | ``right`` predictions of one image (scores above ``score_thresh``) with
    matched colours; ``right_extra_boxes`` (K, 4) are drawn dashed red on the right (the
    detection stage's boxes of a Turbo prediction, to show where refinement moved them)."""
    left, right = left[left.scores > score_thresh], right[right.scores > score_thresh]
    lc, rc = match_colors(left, right)
    a = draw_instances(image, left, lc, class_names)
    extra = None if right_extra_boxes is None else (right_extra_boxes, "red")
    b = draw_instances(image, right, rc, class_names, extra)
    gap = np.full((a.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([a, gap, b], axis=1)


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points (cost, value) not dominated by another (no other point is at
    most as costly and at least as good, and strictly better in one), by increasing cost."""
    front = []
    for i, (c, v) in enumerate(points):
        dominated = any(
            (c2 <= c and v2 >= v) and (c2 < c or v2 > v)
            for j, (c2, v2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_ap_vs_latency(
    series: Dict[str, List[Tuple[str, float, float, float]]], path: str, title: str = ""
) -> None:
    """One panel per model and task: AP against latency relative to the model's baseline.

    ``series``: model name -> [(variant, relative latency, box AP, mask AP)]. The Pareto
    front of each panel is joined and labelled; every variant has a numbered marker, the
    numbers explained in a legend below the panels (the same number for the same variant
    name across models).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(v for rows in series.values() for v, *_ in rows))
    number = {v: i + 1 for i, v in enumerate(names)}
    models = list(series)
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 6.4), squeeze=False)
    for col, model in enumerate(models):
        rows = series[model]
        for row, (task, k) in enumerate((("box AP", 2), ("mask AP", 3))):
            ax = axes[row, col]
            pts = [(r[1], r[k]) for r in rows]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color="0.55", zorder=2)
            for (x, y), r in zip(pts, rows):
                ax.annotate(
                    str(number[r[0]]),
                    (x, y),
                    fontsize=7,
                    color="0.35",
                    xytext=(3, -9),
                    textcoords="offset points",
                )
            front = pareto_front(pts)
            fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
            ax.plot(fx, fy, "-o", color="C0", markersize=5, zorder=3)
            for i in front:
                ax.annotate(
                    f"{number[rows[i][0]]}: {rows[i][0]}",
                    pts[i],
                    fontsize=7,
                    color="C0",
                    xytext=(4, 4),
                    textcoords="offset points",
                )
            ax.set_title(f"{model}: {task}", fontsize=9)
            ax.set_xlabel("latency (x baseline)", fontsize=8)
            ax.set_ylabel(task, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.margins(x=0.25, y=0.15)
    legend = "\n".join(f"{number[v]}: {v}" for v in names)
    fig.text(0.01, 0.0, legend, fontsize=7, va="top", family="monospace")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_ap_vs_cycles(series: Dict[str, List[Tuple[int, float, float]]], path: str) -> None:
    """Box and mask AP against the number of turbo cycles (0 = detection and vanilla masks).
    ``series``: model name -> [(cycles, box AP, mask AP)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, (model, rows) in enumerate(series.items()):
        rows = sorted(rows)
        xs = [r[0] for r in rows]
        ax.plot(xs, [r[1] for r in rows], "o-", color=f"C{i}", label=f"{model} box AP")
        ax.plot(xs, [r[2] for r in rows], "s--", color=f"C{i}", label=f"{model} mask AP")
    ax.set_xlabel("turbo cycles")
    ax.set_ylabel("AP")
    ax.set_xticks(sorted({r[0] for rows in series.values() for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
