"""Pictures of Turbo's effect: baseline against Turbo side by side, the same colour for the
same object, drawn with Detectron2's ``Visualizer``.

Used by the demo, the benchmark and the tutorial notebook. Images are RGB ``uint8`` arrays
(H, W, 3); instances are Detectron2 outputs in the original image frame.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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
