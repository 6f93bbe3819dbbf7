"""turbo.visualization: titled side-by-side pictures and close-ups of what changed, drawn with
Detectron2's Visualizer on hand-made predictions."""

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from turbo.visualization import changed_crops, ranked_changes, side_by_side, titled

H, W = 100, 120


def _inst(boxes, classes, scores):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
        m[y0:y1, x0:x1] = True
    return Instances(
        (H, W),
        pred_boxes=Boxes(boxes),
        pred_classes=torch.tensor(classes, dtype=torch.int64),
        scores=torch.tensor(scores, dtype=torch.float32),
        pred_masks=masks,
    )


def _pair():
    # object 0 unchanged, object 1 moved a little, object 2 only on the left, object 3 only on
    # the right, object 4 below the score threshold on the right
    left = _inst(
        [[5, 5, 30, 30], [40, 10, 80, 50], [60, 60, 90, 90], [10, 60, 40, 95]],
        [0, 1, 2, 0],
        [0.9, 0.8, 0.7, 0.9],
    )
    right = _inst(
        [[5, 5, 30, 30], [44, 12, 80, 50], [90, 5, 115, 30], [10, 60, 40, 95]],
        [0, 1, 1, 0],
        [0.95, 0.7, 0.6, 0.3],
    )
    return left, right


def test_ranked_changes():
    left, right = _pair()
    ranked = ranked_changes(left, right)
    assert sorted((le, r) for _, le, r in ranked) == [(-1, 2), (0, 0), (1, 1), (2, -1), (3, 3)]
    assert {(le, r) for c, le, r in ranked[:2]} == {(-1, 2), (2, -1)}  # one side only first
    change = {(le, r): c for c, le, r in ranked}
    assert change[(0, 0)] == 0.0 and 0 < change[(1, 1)] < 2
    assert change[(1, 1)] > change[(3, 3)] == 0.0
    assert ranked_changes(left[:0], right[:0]) == []


def test_side_by_side_and_titles():
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    left, right = _pair()
    picture = side_by_side(image, left, right, ["a", "b", "c"])
    # drawn at least 512 px wide, under 28 px titles, with a 4 px gap
    scale = 512 / W
    h = picture.shape[0] - 28
    assert abs(h - H * scale) <= 1 and picture.shape[1:] == (2 * round(W * scale) + 4, 3)
    assert (picture[:28] < 128).any()  # the titles are written
    assert side_by_side(image, left, right, titles=None).shape[0] == h
    t = titled(np.zeros((10, 50, 3), dtype=np.uint8), "x", 20)
    assert t.shape == (30, 50, 3) and (t[:20] == 255).mean() > 0.8


def test_changed_crops():
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    left, right = _pair()
    crops = changed_crops(image, left, right, ["a", "b", "c"], num=3, size=64)
    # three titled pairs side by side: 64 px crops under 24 px titles
    assert crops.shape == (64 + 24, 3 * (2 * 64 + 4) + 2 * 12, 3)
    assert changed_crops(image, left[:1], right[:1], num=3, size=64).shape[1] == 2 * 64 + 4
    assert changed_crops(image, left[:0], right[:0]) is None
    # nothing above the threshold on either side: no picture
    assert changed_crops(image, left, right, score_thresh=0.99) is None
