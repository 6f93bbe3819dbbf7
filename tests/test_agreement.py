"""turbo.benchmark.agreement: detections of two runs paired one to one, and how far the pairs
differ."""

import pytest
import torch
from detectron2.structures import Boxes, Instances

from turbo.benchmark.agreement import agreement, match_detections


def _instances(boxes, scores, classes, masks=None):
    fields = dict(
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
        scores=torch.tensor(scores),
        pred_classes=torch.tensor(classes),
    )
    if masks is not None:
        fields["pred_masks"] = masks
    return Instances((40, 40), **fields)


def test_identical_runs_agree_exactly():
    masks = torch.rand(3, 40, 40) > 0.5
    a = _instances(
        [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 30, 8]], [0.9, 0.5, 0.2], [0, 1, 0], masks
    )
    r = agreement([(a, a), (a[:0], a[:0])])
    assert r == {
        "detections": (3, 3),
        "matched": 3,
        "box_max_px": 0.0,
        "score_max": 0.0,
        "mask_iou_min": 1.0,
    }


def test_differences_are_measured_and_unmatched_rows_counted():
    masks = torch.zeros(4, 40, 40, dtype=torch.bool)
    masks[:, 5:15, 5:15] = True  # 100 pixels each
    a = _instances(
        [[0, 0, 10, 10], [20, 20, 30, 30], [0, 20, 10, 30], [20, 0, 30, 10]],
        [0.9, 0.8, 0.7, 0.6],
        [0, 0, 1, 2],
        masks,
    )
    other = masks.clone()
    other[0, 5:15, 5:10] = False  # half the first mask: IoU 0.5
    b = _instances(
        [[0.5, 0, 10, 10], [20, 20, 30, 30], [0, 20, 10, 30], [20, 0, 30, 10]],
        [0.9, 0.75, 0.7, 0.6],
        [0, 0, 2, 2],  # the third detection changed class: no pair
        other,
    )
    ia, ib = match_detections(a, b)
    assert ia.tolist() == ib.tolist() == [0, 1, 3]
    r = agreement([(a, b[:3])])  # and the last one missing: no pair either
    assert r["detections"] == (4, 3) and r["matched"] == 2
    assert r["box_max_px"] == 0.5
    assert r["score_max"] == pytest.approx(0.05)
    assert r["mask_iou_min"] == 0.5


def test_duplicates_with_one_box_pair_by_score():
    """Soft-NMS's decayed duplicates can share a box exactly: their scores tell them apart."""
    box = [[2, 2, 12, 12]] * 3
    a = _instances(box, [0.9, 0.4, 0.1], [0, 0, 0])
    b = _instances(box, [0.1, 0.9, 0.4], [0, 0, 0])  # the same detections in another order
    ia, ib = match_detections(a, b)
    assert ia.tolist() == [0, 1, 2] and ib.tolist() == [1, 2, 0]
    assert agreement([(a, b)])["score_max"] == 0.0


def test_no_pair_below_the_overlap_and_bad_threshold_refused():
    a = _instances([[0, 0, 10, 10]], [0.9], [0])
    b = _instances([[6, 0, 16, 10]], [0.9], [0])  # IoU 0.25
    assert match_detections(a, b)[0].numel() == 0
    assert match_detections(a, b, min_iou=0.2)[0].tolist() == [0]
    with pytest.raises(ValueError, match="min_iou"):
        match_detections(a, b, min_iou=0.0)
