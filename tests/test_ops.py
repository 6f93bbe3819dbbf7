"""Tests of turbo.ops: Maskness, exact mask-to-box refinement, batched Soft-NMS.

References are Detectron2's own paste (``paste_masks_in_image`` + ``BitMasks``, whole image:
``turbo.benchmark.mask_paste.pasted_mask_boxes``), torchvision's ``batched_nms`` and a plain
sequential Soft-NMS written below.
"""

import math
from typing import List, Tuple

import detectron2  # noqa: F401  (a missing Detectron2 must fail loudly, not skip)
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.layers.mask_ops import paste_masks_in_image
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from turbo.benchmark.mask_paste import pasted_mask_boxes
from turbo.ops import (
    batched_soft_nms,
    edge_normalized,
    interior_level,
    mask_boxes,
    maskness,
    resample_masks,
    soft_nms_in_order,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------------------------
# maskness
# --------------------------------------------------------------------------------------------


def test_maskness_hand_values():
    m = torch.zeros(3, 2, 2)
    m[0] = torch.tensor([[0.1, 0.2], [0.3, 0.34]])  # all below 0.35 -> 0
    m[1] = torch.tensor([[0.5, 1.0], [0.35, 0.1]])  # (0.5 + 1.0 + 0.35) / 3
    m[2] = 0.8  # all cells pass -> 0.8
    out = maskness(m, 0.35)
    assert out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([0.0, 1.85 / 3, 0.8]))


def test_maskness_shapes_agree():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(5, 28, 28, generator=g)
    a = maskness(m, 0.5)
    b = maskness(m[:, None], 0.5)
    torch.testing.assert_close(a, b)
    expected = torch.stack([x[x >= 0.5].mean() for x in m])
    torch.testing.assert_close(a, expected)
    # one threshold per mask, as the interior level reads it
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    per_mask = maskness(m[:, None], t)
    torch.testing.assert_close(per_mask, torch.stack([x[x >= v].mean() for x, v in zip(m, t)]))
    assert per_mask[2] == a[2]


def test_maskness_nan_and_inf_are_finite():
    m = torch.full((2, 4, 4), float("nan"))
    m[1, 0, 0] = 0.9
    m[1, 0, 1] = float("inf")  # counts as 1
    m[1, 0, 2] = float("-inf")  # counts as 0
    out = maskness(m, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([0.0, 0.95]))


def test_maskness_empty():
    out = maskness(torch.zeros(0, 1, 28, 28), 0.35)
    assert out.shape == (0,)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 6), t=st.floats(-0.5, 1.5))
def test_maskness_in_unit_interval(seed: int, n: int, t: float):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(n, 1, 7, 7, generator=g)
    m[m > 0.9] = float("nan")
    out = maskness(m, t)
    assert out.shape == (n,)
    assert torch.isfinite(out).all()
    assert ((out >= 0) & (out <= 1)).all()


# --------------------------------------------------------------------------------------------
# mask_boxes: hand-made cases
#
# Pasting samples, for pixel column x, the mask at cell coordinate p(x) = (x + 0.5 - x0) * M /
# (x1 - x0) - 0.5, bilinearly with zero padding (row q(y) likewise). With 4 pixels per cell and
# x0 = k + 0.5, p(x) = (x - x0 - 1.5) / 4 is an integer exactly at pixel x0 + 1.5 + 4 j: every
# cell centre falls on a pixel centre and consecutive pixels are 1/4 cell apart. For a fixed
# column the value is linear in q between cell rows, so the x extent is the union over mask rows
# of the 1-D passing ranges of p (and the y extent the same over mask columns).
# --------------------------------------------------------------------------------------------


def _pattern(rows: List[str], on: float = 1.0) -> Tensor:
    return torch.tensor([[on if c == "#" else 0.0 for c in r] for r in rows])


def _run1(mask: Tensor, box, image_size, t: float) -> Tuple[List[float], bool]:
    refined, found = mask_boxes(mask[None], torch.tensor([box], dtype=torch.float32), image_size, t)
    return refined[0].tolist(), bool(found[0])


def _disc(m: int = 8) -> Tensor:
    """0.9 on cells within distance 3 of the centre (3.5, 3.5), 0.3 on the ring out to 4."""
    i = torch.arange(m, dtype=torch.float64)[:, None]
    j = torch.arange(m, dtype=torch.float64)[None, :]
    d2 = (i - 3.5) ** 2 + (j - 3.5) ** 2
    return torch.where(d2 <= 9, 0.9, torch.where(d2 <= 16, 0.3, 0.0)).float()


def test_mask_boxes_disc():
    disc = _disc()
    # The 0.9 cells span columns 1..6 (row 3: d2 = 0.25 + 2.5^2 <= 9) and rows 1..6.
    # Box x: 4.5..36.5 -> cell centre j at pixel x = 6 + 4 j; box y: 8.5..40.5 -> y = 10 + 4 i.
    # t = 0.5: from the 0.3 cell to the 0.9 cell the value reaches 0.5 at 1/3 cell = 1.33 px
    # past the 0.3 centre, i.e. 2.67 px before the 0.9 centre: first column
    # ceil(6 + 4 - 2.67) = 8, last floor(6 + 24 + 2.67) = 32 -> x1 = 33; rows 12..36 -> y1 = 37.
    box = [4.5, 8.5, 36.5, 40.5]
    assert _run1(disc, box, (48, 48), 0.5) == ([8.0, 12.0, 33.0, 37.0], True)
    # t = 0.25: the 0.3 ring (columns 0..7, rows 0..7) passes too; from the zero padding at
    # p = -1 to 0.3 at p = 0 the value reaches 0.25 at p = -1/6, i.e. 0.67 px before the centre
    # of cell 0: first column ceil(6 - 0.67) = 6, last floor(6 + 28 + 0.67) = 34 -> x1 = 35.
    assert _run1(disc, box, (48, 48), 0.25) == ([6.0, 10.0, 35.0, 39.0], True)
    # t = 0.95: nothing reaches it.
    assert _run1(disc, box, (48, 48), 0.95) == (box, False)


def test_mask_boxes_plateau_exactly_at_threshold():
    # Cells (rows 2..4, columns 3..6) of value 0.5 in zeros, threshold 0.5: the paste equals
    # the threshold on the plateau and is below it everywhere else. Box 0..16 on an 8x8 mask:
    # 2 px per cell, pixel x samples cell coordinate (x + 0.5) / 2 - 0.5, so the plateau
    # (cells 3..6) covers x + 0.5 in [7, 13]: pixel columns 7..12, rows 5..8 -> (7, 5, 13, 9).
    mask = torch.zeros(8, 8)
    mask[2:5, 3:7] = 0.5
    box = [0.0, 0.0, 16.0, 16.0]
    expected = [7.0, 5.0, 13.0, 9.0]
    out, found = mask_boxes(mask[None], torch.tensor([box]), (16, 16), 0.5)
    assert out[0].tolist() == expected and bool(found[0])
    # a threshold just above the plateau: nothing passes
    out, found = mask_boxes(mask[None], torch.tensor([box]), (16, 16), 0.5001)
    assert out[0].tolist() == box and not bool(found[0])


RING = [
    "........",
    "..####..",
    ".#....#.",
    ".#....#.",
    ".#....#.",
    ".#....#.",
    "..####..",
    "........",
]


def test_mask_boxes_ring():
    # Binary mask, t = 0.6: along a row the value falls from 1 at a cell centre to 0 at the next
    # one, so it is >= 0.6 up to 0.4 cell = 1.6 px from the centre of a foreground cell: the
    # extent is the outermost foreground centres +- 1 px. The hole does not matter.
    # Box 8.5..40.5 (M = 8, 4 px per cell): centre of cell j at pixel 10 + 4 j. Columns 1..6:
    # pixels 14 - 1 = 13 .. 34 + 1 = 35 -> (13, ., 36, .); rows 1..6 likewise.
    ring = _pattern(RING)
    assert _run1(ring, [8.5, 8.5, 40.5, 40.5], (50, 60), 0.6) == ([13.0, 13.0, 36.0, 36.0], True)


def test_mask_boxes_l_shape():
    # M = 4: a vertical bar in column 0 (rows 0..3) and a foot in row 3 (columns 0..2).
    # Box 8.5..24.5: cell centres at pixels 10, 14, 18, 22. t = 0.6 -> centres +- 1 px:
    # columns 10 - 1 = 9 .. 18 + 1 = 19 -> x1 = 20; rows 9 .. 22 + 1 = 23 -> y1 = 24.
    ell = _pattern(["#...", "#...", "#...", "###."])
    assert _run1(ell, [8.5, 8.5, 24.5, 24.5], (32, 32), 0.6) == ([9.0, 9.0, 20.0, 24.0], True)
    # The (N, 1, M, M) layout gives the same answer.
    refined, found = mask_boxes(
        ell[None, None], torch.tensor([[8.5, 8.5, 24.5, 24.5]]), (32, 32), 0.6
    )
    assert refined.tolist() == [[9.0, 9.0, 20.0, 24.0]] and found.tolist() == [True]


def test_mask_boxes_touching_roi_border_spills_outside_box():
    # All-ones M = 4 mask in box 8..24 (4 px per cell): p(x) = (x - 9.5) / 4. Beyond the border
    # the value falls linearly to 0 at p = -1 (half a cell outside the box). t = 0.25 is reached
    # at p = -0.75 -> x = 6.5 -> first pixel 7; on the right at p = 3.75 -> x = 24.5 -> last
    # pixel 24, x1 = 25. So the tight box is one pixel larger than the input box on every side.
    ones = torch.ones(4, 4)
    assert _run1(ones, [8.0, 8.0, 24.0, 24.0], (40, 40), 0.25) == ([7.0, 7.0, 25.0, 25.0], True)
    # t = 0.75: reached at p = -0.25 -> x = 8.5 -> 9, and p = 3.25 -> x = 22.5 -> 22, x1 = 23.
    assert _run1(ones, [8.0, 8.0, 24.0, 24.0], (40, 40), 0.75) == ([9.0, 9.0, 23.0, 23.0], True)
    # Foreground only in the last column: spills on the right only. Columns: 1 at p = 3 falls
    # to 0 at p = 2 and p = 4; t = 0.25 -> p in [2.25, 3.75] -> x in [18.5, 24.5] -> 19..24.
    right = torch.zeros(4, 4)
    right[:, 3] = 1
    assert _run1(right, [8.0, 8.0, 24.0, 24.0], (40, 40), 0.25) == ([19.0, 7.0, 25.0, 25.0], True)


def test_mask_boxes_empty_mask_keeps_box():
    box = [3.25, 4.5, 20.0, 30.75]
    assert _run1(torch.zeros(8, 8), box, (40, 40), 0.5) == (box, False)
    # Uniform 0.4 never reaches 0.5 (bilinear values are convex combinations of 0.4 and 0).
    assert _run1(torch.full((8, 8), 0.4), box, (40, 40), 0.5) == (box, False)


@pytest.mark.parametrize("threshold", [0.5, 0.0])
def test_mask_boxes_with_autograd_on(threshold):
    """Inputs that require grad (eval with autograd on): the boxes of autograd off; a found
    tight box is whole pixels (no gradient), a row that keeps its input box keeps its
    gradient."""
    probs = torch.zeros(2, 8, 8)
    probs[0, 2:6, 3:7] = 0.9  # row 1 empty: keeps its box unless the threshold is 0
    boxes = torch.tensor([[3.25, 4.5, 20.0, 30.75], [1.0, 2.0, 9.5, 7.25]])
    with torch.no_grad():
        expected, found_expected = mask_boxes(probs, boxes, (40, 40), threshold)
    p, b = probs.clone().requires_grad_(), boxes.clone().requires_grad_()
    got, found = mask_boxes(p, b, (40, 40), threshold)
    assert torch.equal(got, expected) and torch.equal(found, found_expected)
    assert got.requires_grad
    (grad,) = torch.autograd.grad(got.sum(), b)
    assert torch.equal(grad, (~found)[:, None].float().expand(2, 4))


def test_mask_boxes_box_partly_outside_image():
    ones = torch.ones(4, 4)
    # Box -6..10: p(x) = (x + 4.5) / 4, t = 0.5 passes p in [-0.5, 3.5] -> x in [-6.5, 9.5] ->
    # pixels -6..9, of which 0..9 exist.
    assert _run1(ones, [-6.0, -6.0, 10.0, 10.0], (40, 40), 0.5) == ([0.0, 0.0, 10.0, 10.0], True)
    # Box 30..46 in a 40 x 36 (h x w) image: p(x) = (x - 31.5) / 4 -> x in [29.5, 45.5] ->
    # pixels 30..45, clipped to 30..35 in x (w = 36) and 30..39 in y (h = 40).
    assert _run1(ones, [30.0, 30.0, 46.0, 46.0], (40, 36), 0.5) == ([30.0, 30.0, 36.0, 40.0], True)
    # Box -20..-4: foreground pixels -20..-5, none inside the image.
    assert _run1(ones, [-20.0, 0.0, -4.0, 16.0], (40, 40), 0.5) == ([-20.0, 0.0, -4.0, 16.0], False)


def test_mask_boxes_degenerate_boxes():
    ones = torch.ones(3, 4, 4)
    boxes = torch.tensor(
        [
            [5.0, 5.0, 5.0, 10.0],  # zero width
            [5.0, 9.0, 12.0, 3.0],  # negative height
            [float("nan"), 0.0, 4.0, 4.0],
        ]
    )
    refined, found = mask_boxes(ones, boxes, (20, 20), 0.5)
    assert found.tolist() == [False, False, False]
    torch.testing.assert_close(refined, boxes, equal_nan=True)


def test_mask_boxes_nonpositive_threshold_is_clipped_box_extent():
    ones = torch.zeros(3, 4, 4)
    boxes = torch.tensor(
        [
            [2.3, 3.7, 10.2, 50.0],
            [-5.0, -5.0, -1.0, -1.0],  # outside the image
            [1.0, 1.0, 1.0, 2.0],
        ]
    )  # degenerate
    refined, found = mask_boxes(ones, boxes, (40, 30), 0.0)
    assert found.tolist() == [True, False, False]
    assert refined[0].tolist() == [2.0, 3.0, 11.0, 40.0]
    torch.testing.assert_close(refined[1:], boxes[1:])


def test_mask_boxes_cost_independent_of_image_size():
    # A 10^6 x 10^6 image and a 4 x 10^5 pixel box: pasting would need 10^12 pixels. All-ones
    # M = 4 mask, t = 0.5: p = -0.5 at x = x0 - 0.5 and p = 3.5 at x = x1 - 0.5, so the tight box
    # is the (integer) input box itself.
    box = [1000.0, 2000.0, 401000.0, 402000.0]
    refined, found = mask_boxes(
        torch.ones(1, 4, 4), torch.tensor([box], dtype=torch.float64), (10**6, 10**6), 0.5
    )
    assert refined.dtype == torch.float64
    assert refined[0].tolist() == box and found.tolist() == [True]


def test_mask_boxes_empty_input():
    refined, found = mask_boxes(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (10, 10), 0.5)
    assert refined.shape == (0, 4) and found.shape == (0,) and found.dtype == torch.bool


# --------------------------------------------------------------------------------------------
# mask_boxes vs Detectron2's paste
# --------------------------------------------------------------------------------------------


def _random_masks(g: torch.Generator, n: int, m: int, smooth: bool) -> Tensor:
    if smooth:
        low = torch.randn(n, 1, 5, 5, generator=g) * 4
        return torch.sigmoid(F.interpolate(low, size=(m, m), mode="bicubic", align_corners=False))[
            :, 0
        ]
    return torch.rand(n, m, m, generator=g) ** 3  # noisy, mostly low with scattered peaks


def _random_boxes(g: torch.Generator, n: int, h: int, w: int) -> Tensor:
    """Boxes of 0.5..0.9 * image size, centres up to 20% outside the image."""
    size = torch.tensor([w, h], dtype=torch.float32)
    centre = (torch.rand(n, 2, generator=g) * 1.4 - 0.2) * size
    wh = (torch.rand(n, 2, generator=g) ** 2 * 0.9 * size).clamp(min=0.5)
    return torch.cat([centre - wh / 2, centre + wh / 2], dim=1)


@pytest.mark.parametrize("m", [28, 14])
@pytest.mark.parametrize("smooth", [True, False])
def test_mask_boxes_agree_with_detectron2_paste(m: int, smooth: bool):
    g = torch.Generator().manual_seed(1000 * m + smooth)
    h, w = 70, 90
    exact = total = 0
    for t in (0.2, 0.5, 0.8):
        masks = _random_masks(g, 40, m, smooth)
        boxes = _random_boxes(g, 40, h, w)
        ref, ref_found = pasted_mask_boxes(masks, boxes, (h, w), t)
        out, found = mask_boxes(masks, boxes, (h, w), t)
        assert torch.equal(found, ref_found)
        assert ((out[found] - ref[found]).abs() <= 1).all()
        torch.testing.assert_close(out[~found], boxes[~found])
        exact += int((out[found] == ref[found]).all(dim=1).sum())
        total += int(found.sum())
    assert total >= 50  # the draw exercises many found rows (and many boxes off the image)
    # No allowance is used: every side agrees exactly. (A difference could only come from
    # Detectron2's float32 paste rounding a pixel whose value is within ~1e-6 of the threshold;
    # the 1-pixel bound above is what such a case would be allowed, found must always agree.)
    assert exact == total


def test_mask_boxes_with_autograd_inputs():
    """Masks that require grad (a model called outside ``torch.no_grad``) give the same boxes:
    the in-place work inside runs on a detached copy."""
    g = torch.Generator().manual_seed(11)
    masks = _random_masks(g, 20, 28, smooth=True).requires_grad_()
    boxes = _random_boxes(g, 20, 70, 90)
    out, found = mask_boxes(masks * 1.0, boxes, (70, 90), 0.5)
    ref, ref_found = mask_boxes(masks.detach(), boxes, (70, 90), 0.5)
    assert torch.equal(out, ref) and torch.equal(found, ref_found)


def test_mask_boxes_per_row_image_sizes():
    g = torch.Generator().manual_seed(7)
    sizes = [(60, 80), (45, 100), (90, 50)]
    masks, boxes, hw = [], [], []
    for h, w in sizes:
        masks.append(_random_masks(g, 12, 28, smooth=True))
        boxes.append(_random_boxes(g, 12, h, w))
        hw.append(torch.tensor([[h, w]]).expand(12, 2))
    out, found = mask_boxes(torch.cat(masks)[:, None], torch.cat(boxes), torch.cat(hw), 0.5)
    for k, (h, w) in enumerate(sizes):
        rows = slice(12 * k, 12 * (k + 1))
        ref, ref_found = pasted_mask_boxes(masks[k], boxes[k], (h, w), 0.5)
        assert torch.equal(found[rows], ref_found)
        assert torch.equal(out[rows][ref_found], ref[ref_found])
        single, _ = mask_boxes(masks[k], boxes[k], (h, w), 0.5)
        assert torch.equal(out[rows], single)


@pytest.mark.parametrize("device", DEVICES)
def test_mask_boxes_dtype_and_device(device: str):
    g = torch.Generator().manual_seed(3)
    masks = _random_masks(g, 20, 28, smooth=True)
    boxes = _random_boxes(g, 20, 64, 64)
    ref, ref_found = mask_boxes(masks, boxes, (64, 64), 0.4)
    for dtype in (torch.float32, torch.float64, torch.float16):
        out, found = mask_boxes(masks.to(device), boxes.to(device, dtype), (64, 64), 0.4)
        assert out.dtype == dtype and out.device.type == device
        if dtype != torch.float16:  # half boxes move the box itself
            assert torch.equal(found.cpu(), ref_found)
            torch.testing.assert_close(out.cpu().float(), ref)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 8),
    h=st.integers(1, 50),
    w=st.integers(1, 50),
    t=st.floats(0.01, 1.0),
    scale=st.floats(0.01, 3.0),
)
def test_mask_boxes_inside_image_property(
    seed: int, n: int, h: int, w: int, t: float, scale: float
):
    g = torch.Generator().manual_seed(seed)
    masks = _random_masks(g, n, 14, smooth=bool(seed % 2))
    boxes = _random_boxes(g, n, h, w) * scale
    out, found = mask_boxes(masks, boxes, (h, w), t)
    f = out[found]
    assert ((f[:, 0] >= 0) & (f[:, 1] >= 0) & (f[:, 2] <= w) & (f[:, 3] <= h)).all()
    assert ((f[:, 0] < f[:, 2]) & (f[:, 1] < f[:, 3])).all()
    assert (f == f.round()).all()
    assert torch.equal(out[~found], boxes[~found])


# --------------------------------------------------------------------------------------------
# batched_soft_nms
# --------------------------------------------------------------------------------------------


def reference_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    method: str,
    iou_threshold: float,
    sigma: float,
    min_score: float,
) -> Tuple[List[int], List[float]]:
    """Plain sequential Soft-NMS in float32 numpy: loop over categories, loop picking argmax."""
    b = boxes.numpy().astype(np.float32)
    s = scores.numpy().astype(np.float32)
    cats = idxs.numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep: List[int] = []
    out: List[float] = []
    for c in sorted(set(cats.tolist())):
        cur = {i: s[i] for i in range(len(s)) if cats[i] == c and s[i] >= min_score}
        while cur:
            best = max(cur, key=lambda i: (cur[i], -i))
            keep.append(best)
            out.append(float(cur.pop(best)))
            for i in list(cur):
                iw = max(np.float32(0), min(b[i, 2], b[best, 2]) - max(b[i, 0], b[best, 0]))
                ih = max(np.float32(0), min(b[i, 3], b[best, 3]) - max(b[i, 1], b[best, 1]))
                inter = iw * ih
                union = area[i] + area[best] - inter
                iou = inter / union if union > 0 else np.float32(0)
                if method == "linear":
                    if iou > iou_threshold:
                        cur[i] = cur[i] * (np.float32(1) - iou)
                elif method == "gaussian":
                    cur[i] = cur[i] * np.exp(-(iou * iou) / np.float32(sigma))
                elif iou > iou_threshold:
                    del cur[i]
                    continue
                if cur[i] < min_score:
                    del cur[i]
    order = sorted(range(len(keep)), key=lambda k: (-out[k], keep[k]))
    return [keep[k] for k in order], [out[k] for k in order]


def _random_detections(g: torch.Generator, n: int, n_cats: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Clustered boxes (many overlaps), distinct scores, categories 0..n_cats-1 (shuffled ids)."""
    centre = torch.rand(n, 2, generator=g) * 120
    wh = torch.rand(n, 2, generator=g) * 50 + 5
    boxes = torch.cat([centre - wh / 2, centre + wh / 2], dim=1)
    scores = torch.rand(n, generator=g) * 0.95 + 0.01
    ids = torch.randperm(1000, generator=g)[:n_cats] * 3
    idxs = ids[torch.randint(0, n_cats, (n,), generator=g)]
    return boxes, scores, idxs


@pytest.mark.parametrize(
    "method,thr,sigma,min_score",
    [
        ("linear", 0.3, 0.5, 1e-3),
        ("linear", 0.5, 0.5, 0.05),
        ("gaussian", 0.3, 0.5, 1e-3),
        ("gaussian", 0.3, 0.1, 0.01),
        ("hard", 0.5, 0.5, 0.0),
        ("hard", 0.7, 0.5, 0.2),
    ],
)
def test_soft_nms_matches_sequential_reference(
    method: str, thr: float, sigma: float, min_score: float
):
    g = torch.Generator().manual_seed(11)
    for n, n_cats in [(150, 4), (60, 1), (200, 25)]:
        boxes, scores, idxs = _random_detections(g, n, n_cats)
        keep, new_scores = batched_soft_nms(boxes, scores, idxs, method, thr, sigma, min_score)
        ref_keep, ref_scores = reference_soft_nms(
            boxes, scores, idxs, method, thr, sigma, min_score
        )
        assert keep.dtype == torch.int64 and new_scores.dtype == scores.dtype
        assert set(keep.tolist()) == set(ref_keep)
        assert keep.tolist() == ref_keep  # no ties in this draw: the order is defined
        torch.testing.assert_close(new_scores, torch.tensor(ref_scores), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["linear", "gaussian", "hard"])
@pytest.mark.parametrize("topk", [-1, 10])
def test_soft_nms_decay_table_equals_iou_per_step(method: str, topk: int, monkeypatch):
    """Small layouts read each pick's decay from a table made once, larger ones compute the
    pick's IoU at every step: the two give the same picks and the same scores, bit for bit,
    and the reference's."""
    import turbo.ops as ops

    g = torch.Generator().manual_seed(3)
    boxes, scores, idxs = _random_detections(g, 300, 6)
    image = (idxs // 3) % 2  # two segments, each category within one
    n_cats = int(torch.unique(idxs).numel())
    width = int(torch.bincount(torch.unique(idxs, return_inverse=True)[1]).max())
    assert n_cats * width * width <= ops._SOFT_NMS_TABLE_SIZE  # the table path by default
    table = batched_soft_nms(boxes, scores, idxs, method, 0.3, 0.5, 1e-3, topk, image)
    monkeypatch.setattr(ops, "_SOFT_NMS_TABLE_SIZE", 0)
    per_step = batched_soft_nms(boxes, scores, idxs, method, 0.3, 0.5, 1e-3, topk, image)
    assert torch.equal(table[0], per_step[0]) and torch.equal(table[1], per_step[1])
    if topk < 0:
        ref_keep, ref_scores = reference_soft_nms(boxes, scores, idxs, method, 0.3, 0.5, 1e-3)
        assert table[0].tolist() == ref_keep
        torch.testing.assert_close(table[1], torch.tensor(ref_scores), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["linear", "gaussian", "hard"])
@pytest.mark.parametrize("topk", [-1, 0, 1, 30, 100])
def test_soft_nms_in_order_equals_batched_soft_nms(method: str, topk: int):
    """The traceable form (one pick per step, in output order) gives exactly what the eager
    form gives, ties included, and the same under a trace replayed on other inputs."""
    g = torch.Generator().manual_seed(5)
    for n, n_cats in [(0, 1), (1, 1), (150, 4), (400, 30)]:
        boxes, scores, idxs = _random_detections(g, n, n_cats)
        scores[1::3] = scores[0 : len(scores[1::3]) * 3 : 3]  # ties across and within categories
        expected = batched_soft_nms(boxes, scores, idxs, method, 0.4, 0.5, 1e-3, topk)
        actual = soft_nms_in_order(boxes, scores, idxs, method, 0.4, 0.5, 1e-3, topk)
        assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])

    def run(b, s, i):
        return batched_soft_nms(b, s, i, method, 0.4, 0.5, 1e-3, topk)

    traced = torch.jit.trace(run, _random_detections(g, 50, 3), check_trace=False)
    for n in (0, 7, 300):
        inputs = _random_detections(g, n, 5)
        expected, actual = run(*inputs), traced(*inputs)
        assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])


def test_soft_nms_refuses_to_trace_a_topk_per_segment():
    boxes, scores, idxs = _random_detections(torch.Generator().manual_seed(0), 20, 2)
    with pytest.raises(RuntimeError, match="cannot be traced with topk_by"):
        torch.jit.trace(
            lambda b, s, i: batched_soft_nms(b, s, i, topk=5, topk_by=torch.zeros_like(i)),
            (boxes, scores, idxs),
            check_trace=False,
        )


def test_soft_nms_hard_equals_torchvision_batched_nms():
    g = torch.Generator().manual_seed(5)
    for thr in (0.3, 0.5, 0.7):
        boxes, scores, idxs = _random_detections(g, 400, 10)
        keep, new_scores = batched_soft_nms(boxes, scores, idxs, "hard", thr, min_score=0.0)
        tv = torchvision.ops.batched_nms(boxes, scores, idxs, thr)
        assert torch.equal(keep, tv)
        assert torch.equal(new_scores, scores[tv])


def test_soft_nms_ties_pick_lowest_index():
    # Identical boxes with equal scores: the lowest index is picked first, the others decay.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3 + [[0.0, 0.0, 10.0, 10.0]])
    scores = torch.full((4,), 0.5)
    idxs = torch.tensor([0, 0, 0, 1])
    keep, s = batched_soft_nms(boxes, scores, idxs, "hard", 0.5)
    assert keep.tolist() == [0, 3]  # tie between categories: lower index first
    keep, s = batched_soft_nms(boxes, scores, idxs, "gaussian", sigma=0.5, min_score=0.0)
    decay = math.exp(-1 / 0.5)
    assert keep.tolist() == [0, 3, 1, 2]
    torch.testing.assert_close(s, torch.tensor([0.5, 0.5, 0.5 * decay, 0.5 * decay**2]))
    # Disjoint boxes, all scores equal: nothing decays, order = input order.
    boxes = torch.tensor([[10.0 * k, 0.0, 10.0 * k + 5, 5.0] for k in range(6)])
    keep, s = batched_soft_nms(boxes, torch.full((6,), 0.25), torch.tensor([2, 0, 2, 1, 0, 2]))
    assert keep.tolist() == [0, 1, 2, 3, 4, 5] and (s == 0.25).all()


def test_soft_nms_linear_hand_values():
    # IoU(A, B) = 50 / 150 = 1/3 > 0.3 -> B: 0.8 * 2/3; C is disjoint and keeps 0.7.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, s = batched_soft_nms(boxes, scores, torch.zeros(3, dtype=torch.int64), "linear", 0.3)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(s, torch.tensor([0.9, 0.7, 0.8 * 2 / 3]))
    # iou_threshold 0.4 > 1/3: no decay.
    keep, s = batched_soft_nms(boxes, scores, torch.zeros(3, dtype=torch.int64), "linear", 0.4)
    assert keep.tolist() == [0, 1, 2] and torch.equal(s, scores)
    # min_score above the decayed score drops B, and inputs below min_score never enter.
    keep, s = batched_soft_nms(
        boxes, scores, torch.zeros(3, dtype=torch.int64), "linear", 0.3, min_score=0.6
    )
    assert keep.tolist() == [0, 2]
    keep, _ = batched_soft_nms(boxes, scores, torch.zeros(3, dtype=torch.int64), min_score=0.85)
    assert keep.tolist() == [0]


def test_soft_nms_empty_single_and_topk():
    for dev in DEVICES:
        keep, s = batched_soft_nms(
            torch.zeros(0, 4, device=dev),
            torch.zeros(0, device=dev),
            torch.zeros(0, dtype=torch.int64, device=dev),
        )
        assert keep.shape == (0,) and keep.dtype == torch.int64 and keep.device.type == dev
        assert s.shape == (0,) and s.dtype == torch.float32
    keep, s = batched_soft_nms(
        torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.3]), torch.tensor([7])
    )
    assert keep.tolist() == [0] and s.tolist() == pytest.approx([0.3])
    # All inputs below min_score.
    keep, s = batched_soft_nms(
        torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([1e-4]), torch.tensor([7])
    )
    assert keep.numel() == 0 and s.numel() == 0
    g = torch.Generator().manual_seed(2)
    boxes, scores, idxs = _random_detections(g, 100, 5)
    full_keep, full_s = batched_soft_nms(boxes, scores, idxs)
    keep, s = batched_soft_nms(boxes, scores, idxs, topk=10)
    assert torch.equal(keep, full_keep[:10]) and torch.equal(s, full_s[:10])
    keep, s = batched_soft_nms(boxes, scores, idxs, topk=0)
    assert keep.numel() == 0


def _cut_per_segment(keep: Tensor, s: Tensor, seg: Tensor, topk: int) -> Tuple[Tensor, Tensor]:
    """The first ``topk`` results of each segment of a full (uncut) Soft-NMS result, in order."""
    taken = {}
    mask = []
    for k in keep.tolist():
        n = taken.get(int(seg[k]), 0)
        mask.append(n < topk)
        taken[int(seg[k])] = n + 1
    mask = torch.tensor(mask, dtype=torch.bool)
    return keep[mask], s[mask]


@pytest.mark.parametrize("method", ["linear", "gaussian", "hard"])
@pytest.mark.parametrize("topk", [1, 7, 40])
def test_soft_nms_topk_per_segment_stops_early_with_the_full_answer(method, topk, monkeypatch):
    """``topk`` with ``topk_by`` (e.g. 100 detections per image): the steps stop once every
    segment's top-k is settled, and the answer is that of all steps cut per segment."""
    import turbo.ops as ops

    g = torch.Generator().manual_seed(11)
    n_images, per_image, n_cats = 3, 400, 4
    parts = [_random_detections(g, per_image, n_cats) for _ in range(n_images)]
    boxes = torch.cat([b for b, _, _ in parts])
    scores = torch.cat([sc for _, sc, _ in parts])
    image = torch.arange(n_images).repeat_interleave(per_image)
    idxs = image * 10_000 + torch.cat([i for _, _, i in parts])  # categories within images
    full_keep, full_s = batched_soft_nms(boxes, scores, idxs, method, 0.3, min_score=1e-4)
    want_keep, want_s = _cut_per_segment(full_keep, full_s, image, topk)

    checks = []
    settled = ops._topk_settled
    monkeypatch.setattr(ops, "_topk_settled", lambda *a: checks.append(settled(*a)) or checks[-1])
    keep, s = batched_soft_nms(
        boxes, scores, idxs, method, 0.3, min_score=1e-4, topk=topk, topk_by=image
    )
    assert torch.equal(keep, want_keep) and torch.equal(s, want_s)
    assert torch.bincount(image[keep], minlength=n_images).tolist() == [topk] * n_images
    # it did stop early: the last check said "settled", long before the ~100 steps per class
    assert checks and checks[-1] and len(checks) < per_image // n_cats // 8

    # one segment (no topk_by): the global top-k, also early
    keep, s = batched_soft_nms(boxes, scores, idxs, method, 0.3, min_score=1e-4, topk=topk)
    assert torch.equal(keep, full_keep[:topk]) and torch.equal(s, full_s[:topk])


def test_soft_nms_topk_with_ties():
    """Equal scores at the cut: the early stop must not let a later, lower-index tie in."""
    g = torch.Generator().manual_seed(5)
    boxes, _, idxs = _random_detections(g, 300, 3)
    scores = torch.full((300,), 0.5)
    scores[::7] = 0.25
    image = torch.arange(300) % 2
    idxs = idxs * 2 + image
    full_keep, full_s = batched_soft_nms(boxes, scores, idxs, "linear", 0.3)
    for topk in (1, 5, 30):
        keep, s = batched_soft_nms(boxes, scores, idxs, "linear", 0.3, topk=topk, topk_by=image)
        want_keep, want_s = _cut_per_segment(full_keep, full_s, image, topk)
        assert torch.equal(keep, want_keep) and torch.equal(s, want_s)


def test_soft_nms_topk_by_validation():
    b, s = torch.zeros(2, 4), torch.ones(2)
    with pytest.raises(ValueError, match="topk_by.*shape"):
        batched_soft_nms(
            b,
            s,
            torch.zeros(2, dtype=torch.int64),
            topk=1,
            topk_by=torch.zeros(3, dtype=torch.int64),
        )
    with pytest.raises(ValueError, match="topk_by.*one segment"):
        batched_soft_nms(
            b, s, torch.zeros(2, dtype=torch.int64), topk=1, topk_by=torch.tensor([0, 1])
        )


def test_soft_nms_validation():
    b, s, i = torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="linear.*gaussian.*hard"):
        batched_soft_nms(b, s, i, method="greedy")
    with pytest.raises(ValueError, match=r"iou_threshold.*\[0, 1\]"):
        batched_soft_nms(b, s, i, iou_threshold=1.5)
    with pytest.raises(ValueError, match="sigma.*> 0"):
        batched_soft_nms(b, s, i, method="gaussian", sigma=0.0)
    with pytest.raises(ValueError, match="min_score.*>= 0"):
        batched_soft_nms(b, s, i, min_score=-0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_soft_nms_device(device: str):
    g = torch.Generator().manual_seed(9)
    boxes, scores, idxs = _random_detections(g, 300, 8)
    ref_keep, ref_s = batched_soft_nms(boxes, scores, idxs, "linear", 0.5)
    keep, s = batched_soft_nms(boxes.to(device), scores.to(device), idxs.to(device), "linear", 0.5)
    assert keep.device.type == device
    assert torch.equal(keep.cpu(), ref_keep)
    torch.testing.assert_close(s.cpu(), ref_s)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(0, 60),
    n_cats=st.integers(1, 5),
    method=st.sampled_from(["linear", "gaussian", "hard"]),
    thr=st.floats(0.0, 1.0),
)
def test_soft_nms_properties(seed: int, n: int, n_cats: int, method: str, thr: float):
    g = torch.Generator().manual_seed(seed)
    boxes, scores, idxs = _random_detections(g, n, n_cats)
    keep, s = batched_soft_nms(boxes, scores, idxs, method, thr)
    assert keep.unique().numel() == keep.numel()
    assert (s <= scores[keep]).all()
    assert (s[:-1] >= s[1:]).all()
    # Permuting the input permutes the indices and nothing else.
    perm = torch.randperm(n, generator=g)
    keep_p, s_p = batched_soft_nms(boxes[perm], scores[perm], idxs[perm], method, thr)
    assert torch.equal(perm[keep_p], keep)
    assert torch.equal(s_p, s)


# ---------------------------------------------------------------------------------------------
# resample_masks
# ---------------------------------------------------------------------------------------------
def test_resample_masks_identity_and_shift():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 8, 8, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [5.0, 3.0, 29.0, 11.0], [2.0, 2.0, 10.0, 18.0]])
    # same box: the same mask
    torch.testing.assert_close(resample_masks(probs, boxes, boxes), probs)
    # shifted right by exactly one cell: cell centres land on old centres, one column over;
    # the last column samples half a cell beyond the old support's centre line -> bilinear
    # with the zero padding, i.e. half the old border value... here one full cell: zero.
    cell_w = (boxes[:, 2] - boxes[:, 0]) / 8
    shifted = boxes + torch.stack([cell_w, 0 * cell_w, cell_w, 0 * cell_w], 1)
    out = resample_masks(probs[:, None], boxes, shifted)
    torch.testing.assert_close(out[:, :, :-1], probs[:, :, 1:])
    torch.testing.assert_close(out[:, :, -1], torch.zeros(3, 8))


def test_resample_masks_pastes_like_the_original():
    from detectron2.layers.mask_ops import paste_masks_in_image

    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
    probs = torch.sigmoid((0.6 - (xx**2 + yy**2).sqrt()) * 10).expand(4, 28, 28).clone()
    boxes = torch.tensor([[20.0, 20.0, 120.0, 100.0]] * 4)
    new = boxes + torch.randn(4, 4, generator=g) * 4
    out = resample_masks(probs, boxes, new)
    a = paste_masks_in_image(probs, boxes, (140, 160), 0.5)
    b = paste_masks_in_image(out, new, (140, 160), 0.5)
    # a smooth mask survives the second interpolation: the pasted masks nearly coincide
    inter = (a & b).sum((1, 2)).float()
    union = (a | b).sum((1, 2)).float()
    assert torch.all(inter / union > 0.97)


def test_resample_masks_degenerate_and_empty():
    probs = torch.ones(2, 4, 4)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 10.0], [0.0, 0.0, 8.0, 8.0]])
    out = resample_masks(probs, boxes, torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 8.0, 8.0]]))
    assert torch.all(out[0] == 0) and torch.isfinite(out).all()
    assert resample_masks(torch.zeros(0, 1, 4, 4), torch.zeros(0, 4), torch.zeros(0, 4)).shape == (
        0,
        4,
        4,
    )


def test_edge_normalized_leaves_masks_without_foreground():
    m = torch.zeros(3, 3, 3)
    m[0, 1, 1], m[0, 0, 0] = 0.8, 0.4  # cells >= 0.4: level 0.6
    m[1, 2, 2] = 0.1  # peak below min_peak: unchanged
    out = edge_normalized(m, 0.2)  # m[2] all zero: unchanged, no division by 0
    torch.testing.assert_close(out[0], m[0] / 0.6)
    torch.testing.assert_close(out[1:], m[1:], rtol=0, atol=0)
    assert torch.isfinite(edge_normalized(torch.zeros(2, 3, 3), 0.0)).all()
    assert edge_normalized(torch.zeros(0, 28, 28), 0.2).shape == (0, 28, 28)


def test_interior_level_hand_values():
    m = torch.zeros(4, 2, 3)
    m[0] = torch.tensor([[0.8, 0.6, 0.4], [0.39, 0.1, 0.0]])  # cells >= 0.4: mean 0.6
    m[1, 0, 0] = 0.3  # a single cell: its own value
    m[2] = 0.7  # a plateau: its value
    level = interior_level(m)  # m[3] all zero: 0
    torch.testing.assert_close(level, torch.tensor([0.6, 0.3, 0.7, 0.0]))
    assert interior_level(torch.zeros(0, 28, 28)).shape == (0,)
    out = edge_normalized(m, 0.2)
    torch.testing.assert_close(out[:3], m[:3] / level[:3, None, None])
    assert torch.equal(out[3], m[3])


def test_edge_normalized_paste_reads_the_edge_at_half_the_level():
    """Detectron2's paste at 0.5 of the normalized masks is its paste of the masks themselves
    at half their interior level. The level is a power of two, so that dividing by it is
    exact: a plateau of one cell at 0.625 and one at 0.375 (mean 0.5, both at or above half
    the peak) over a ramp below it."""
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
    r = (xx**2 + yy**2).sqrt()
    plateau = torch.clamp(0.3 * (1.0 - r / 1.2), min=0.0)  # below 0.3125 everywhere
    plateau[13, 13], plateau[13, 14] = 0.625, 0.375
    boxes = torch.tensor(
        [[10.0, 12.0, 90.0, 70.0], [3.5, 40.2, 60.0, 99.0], [50.0, 5.0, 75.0, 30.0]]
    )
    assert interior_level(plateau[None]).item() == 0.5
    masks = plateau[None].expand(3, 28, 28)
    out = paste_masks_in_image(edge_normalized(masks, 0.2), boxes, (110, 120), 0.5)
    want = paste_masks_in_image(masks, boxes, (110, 120), 0.25)
    assert torch.equal(out, want)
    # masks whose interior is below 1: larger than the probability-0.5 edge gives
    peaks = torch.tensor([1.0, 0.5, 0.25])
    probs = torch.sigmoid((0.6 - r) * 12)[None] + 0.05 * torch.rand(3, 28, 28, generator=g)
    probs = probs / probs.flatten(1).amax(1)[:, None, None] * peaks[:, None, None]
    plain = paste_masks_in_image(probs, boxes, (110, 120), 0.5)
    normalized = edge_normalized(probs, 0.2)
    out = paste_masks_in_image(normalized, boxes, (110, 120), 0.5)
    assert (out.sum((1, 2)) >= plain.sum((1, 2))).all()
    assert (out[1:].sum((1, 2)) > plain[1:].sum((1, 2))).all()
    # the interior level is at least half the peak: no cell above 2
    assert normalized.max() <= 2 and (interior_level(probs) >= 0.5 * peaks).all()
