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
    "titled",
    "side_by_side",
    "changed_crops",
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


def titled(picture: np.ndarray, title: str, height: int = 28) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 under a white band of ``height`` px holding ``title``."""
    from PIL import Image, ImageDraw, ImageFont

    band = Image.new("RGB", (picture.shape[1], height), "white")
    font = ImageFont.load_default(size=int(height * 0.7))
    ImageDraw.Draw(band).text((6, height // 2), title, fill="black", font=font, anchor="lm")
    return np.concatenate([np.asarray(band), picture], axis=0)


def _hstack(pictures: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(p.shape[0] for p in pictures)
    pad = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in pictures]
    space = np.full((h, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([x for p in pad for x in (p, space)][:-1], axis=1)


def side_by_side(
    image: np.ndarray,
    left: Instances,
    right: Instances,
    class_names: Optional[Sequence[str]] = None,
    score_thresh: float = 0.5,
    right_extra_boxes: Optional[np.ndarray] = None,
    titles: Optional[Tuple[str, str]] = ("baseline", "Turbo"),
) -> np.ndarray:
    """``left`` | ``right`` predictions of one image (scores above ``score_thresh``) with
    matched colours, each under its title (``titles`` None: none); ``right_extra_boxes``
    (K, 4) are drawn dashed red on the right (the detection stage's boxes of a Turbo
    prediction, to show where refinement moved them)."""
    left, right = left[left.scores > score_thresh], right[right.scores > score_thresh]
    lc, rc = match_colors(left, right)
    a = draw_instances(image, left, lc, class_names)
    extra = None if right_extra_boxes is None else (right_extra_boxes, "red")
    b = draw_instances(image, right, rc, class_names, extra)
    if titles is not None:
        a, b = titled(a, titles[0]), titled(b, titles[1])
    return _hstack([a, b])


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 1.0


def ranked_changes(
    left: Instances, right: Instances, match_iou: float = 0.3
) -> List[Tuple[float, int, int]]:
    """The objects of two predictions of one image, most changed first: (change, left index,
    right index), an index -1 where the object is on one side only (change 2). A right
    instance is matched to the same-class left one of highest box IoU, at least
    ``match_iou``, each left one once; its change is 1 - box IoU, plus 1 - mask IoU where
    both have ``pred_masks`` (N, H, W) bool."""
    pairs, used = [], set()
    iou = pairwise_iou(right.pred_boxes, left.pred_boxes) if len(left) and len(right) else None
    masks = left.has("pred_masks") and right.has("pred_masks")
    for r in range(len(right)):
        match = -1
        if iou is not None:
            same = right.pred_classes[r] == left.pred_classes
            cand = torch.where(same, iou[r], torch.zeros_like(iou[r]))
            best = int(cand.argmax())
            if cand[best] >= match_iou and best not in used:
                match = best
        if match < 0:
            pairs.append((2.0, -1, r))
            continue
        used.add(match)
        change = 1 - float(iou[r, match])
        if masks:
            change += 1 - _mask_iou(left.pred_masks[match], right.pred_masks[r])
        pairs.append((change, match, r))
    pairs += [(2.0, le, -1) for le in range(len(left)) if le not in used]
    return sorted(pairs, key=lambda p: -p[0])


def changed_crops(
    image: np.ndarray,
    left: Instances,
    right: Instances,
    class_names: Optional[Sequence[str]] = None,
    score_thresh: float = 0.5,
    num: int = 3,
    size: int = 240,
    titles: Tuple[str, str] = ("baseline", "Turbo"),
) -> Optional[np.ndarray]:
    """Close-ups of where ``right`` differs most from ``left`` (one image's predictions in
    the original frame, with ``pred_masks`` (N, H, W) bool): up to ``num`` objects, each a
    titled ``left`` | ``right`` pair of crops around both predictions, enlarged to ``size``
    px, ranked by :func:`ranked_changes` (an object kept above ``score_thresh`` on one side
    only counts as most changed). None when nothing is kept on either side."""
    left, right = left[left.scores > score_thresh], right[right.scores > score_thresh]
    if len(left) == 0 and len(right) == 0:
        return None
    lc, rc = match_colors(left, right)
    drawn_l = draw_instances(image, left, lc, class_names)
    drawn_r = draw_instances(image, right, rc, class_names)
    scale = drawn_l.shape[0] / image.shape[0]
    pairs = ranked_changes(left, right)
    h, w = image.shape[:2]
    rows = []
    for _, le, r in pairs[:num]:
        boxes = [x.pred_boxes.tensor[i] for x, i in ((left, le), (right, r)) if i >= 0]
        box = torch.stack(boxes)
        x0, y0 = box[:, :2].min(dim=0).values.tolist()
        x1, y1 = box[:, 2:].max(dim=0).values.tolist()
        side = max(x1 - x0, y1 - y0) * 1.4 + 16  # context around the object, square
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a0 = int(max(0, min(w - side, cx - side / 2)) * scale)
        b0 = int(max(0, min(h - side, cy - side / 2)) * scale)
        n = int(min(side, w, h) * scale)
        crops = [d[b0 : b0 + n, a0 : a0 + n] for d in (drawn_l, drawn_r)]
        crops = [_resize(c, size) for c in crops]
        rows.append(_hstack([titled(c, t, 24) for c, t in zip(crops, titles)]))
    return _hstack(rows, gap=12)


def _resize(picture: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(picture).resize((size, size), Image.BICUBIC))
