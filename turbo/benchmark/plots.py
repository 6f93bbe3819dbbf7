"""Benchmark plots: AP against latency with the Pareto front labelled, and AP against the
number of turbo cycles."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

__all__ = ["pareto_front", "plot_ap_vs_latency", "plot_ap_vs_cycles"]


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
