"""Tensor operations of Turbo-Inference: Maskness, exact mask-to-box refinement, Soft-NMS.

Everything here is vectorised over detections and device-agnostic (CPU and CUDA); no function
synchronises with the host per detection. Coordinates are those of the resized input image
seen by the ROI heads (Detectron2's ``images.image_sizes``), boxes are XYXY, and pixel
``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``.
"""

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "finite_probs",
    "maskness",
    "edge_normalized",
    "interior_level",
    "mask_boxes",
    "resample_masks",
    "batched_soft_nms",
    "soft_nms_in_order",
    "piecewise_linear",
    "knot_table",
    "class_piecewise_linear",
    "INTERIOR_EDGE",
    "SOFT_NMS_METHODS",
    "SOFT_NMS_IOU_THRESH",
    "SOFT_NMS_SIGMA",
    "SOFT_NMS_MIN_SCORE",
]

# The mask edge ``edge_normalized`` gives: at half each mask's interior level.
INTERIOR_EDGE = "half_interior"

SOFT_NMS_METHODS = ("linear", "gaussian", "hard")
# Soft-NMS defaults, those of the published Mask R-CNN recipe (linear decay above IoU 0.5,
# scores below 0.001 discarded); ``MODEL.TURBO.SOFT_NMS`` takes its defaults from here.
SOFT_NMS_IOU_THRESH = 0.5
SOFT_NMS_SIGMA = 0.5
SOFT_NMS_MIN_SCORE = 1e-3

# Largest (categories x width x width) layout for which `batched_soft_nms` makes the table of
# every pair's decay once instead of one IoU row per step. Up to this size a step costs its
# operations' own overhead, and with the table it has a third of them (1.4-2.2x faster in all
# on CPU, 100 to 800 candidates); from about twice this size, making the table costs more than
# the steps save (the top-k stop often ends the steps early).
_SOFT_NMS_TABLE_SIZE = 1 << 16

# Tolerance, in pixels, of the closed-form pixel bounds in `mask_boxes`, which are computed in
# float32 like Detectron2's own paste (float64 gave the same boxes in the tests at 1.6x the
# time); it makes a pixel lying exactly on a threshold crossing or on a cell boundary count as
# inside, as exact arithmetic would.
_PIXEL_EPS = 1e-6


def finite_probs(probs: Tensor) -> Tensor:
    """Probabilities made finite: NaN and -inf count as 0, +inf as 1 (a NaN mask cell is
    background, a NaN score is no confidence). The one rule every turbo stage applies."""
    return torch.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0)


def _as_mask_stack(mask_probs: Tensor) -> Tensor:
    """(N, M, M) or (N, 1, M, M) -> (N, M, M) view."""
    if mask_probs.dim() == 4 and mask_probs.shape[1] == 1:
        return mask_probs[:, 0]
    if mask_probs.dim() == 3:
        return mask_probs
    raise ValueError(
        f"mask_probs must have shape (N, M, M) or (N, 1, M, M), got {tuple(mask_probs.shape)}"
    )


def maskness(mask_probs: Tensor, threshold: Union[float, Tensor]) -> Tensor:
    """Maskness: mean foreground probability of each soft mask.

    Args:
        mask_probs: (N, M, M) or (N, 1, M, M) probabilities in [0, 1] (RoI mask frame).
        threshold: cells with probability >= threshold are foreground; a float, or (N,) one
            per mask.

    Returns:
        (N,) mean probability over the foreground cells, 0 where a mask has none. NaN cells
        count as 0, +inf as 1 and -inf as 0, so the result is always finite. Floating dtype of
        ``mask_probs`` (computed in at least float32).
    """
    probs = _as_mask_stack(mask_probs).flatten(1)
    out_dtype = probs.dtype if probs.is_floating_point() else torch.float32
    probs = finite_probs(probs.to(torch.promote_types(out_dtype, torch.float32)))
    fg = probs >= (threshold[:, None] if isinstance(threshold, Tensor) else threshold)
    count = fg.sum(dim=1, keepdim=True).clamp(min=1).to(probs.dtype)
    # Divide before summing so that huge finite inputs cannot overflow the sum; the rounding
    # of that sum may pass the largest foreground value by an ulp: cap it there.
    fg_probs = torch.where(fg, probs, torch.zeros_like(probs))
    mean = torch.minimum((fg_probs / count).sum(dim=1), fg_probs.amax(dim=1))
    return mean.to(out_dtype)


def interior_level(mask_probs: Tensor, peak: Optional[Tensor] = None) -> Tensor:
    """(N,) the interior level of each soft mask: its :func:`maskness` at half its peak (the
    mean of its cells at or above half its largest cell); 0 for a mask without a positive cell.

    Args:
        mask_probs: (N, M, M) finite probabilities in [0, 1] (RoI mask frame).
        peak: (N,) the masks' largest cells, when the caller has them already.
    """
    if peak is None:
        peak = mask_probs.flatten(1).amax(dim=1)
    return maskness(mask_probs, 0.5 * peak)


def edge_normalized(mask_probs: Tensor, min_peak: float) -> Tensor:
    """Each soft mask divided by its :func:`interior_level`, so that a paste binarized at 0.5
    (Detectron2's ``detector_postprocess``) reads the mask's edge at half that level
    (:data:`INTERIOR_EDGE`). The result is no longer a probability (values up to 2).

    Bilinear pasting is linear in the cells, so ``paste(m / level) >= 0.5`` is
    ``paste(m) >= 0.5 * level``: the edge of a mask whose interior the head predicts at, say,
    0.8 lies where the pasted probability falls to 0.4, halfway between inside and outside,
    rather than at the absolute 0.5.

    Args:
        mask_probs: (N, M, M) finite probabilities in [0, 1] (RoI mask frame).
        min_peak: masks whose peak is below this (or 0) are returned unchanged: a mask with no
            foreground cell is not blown up into one.

    Returns:
        (N, M, M) >= 0, same dtype: each mask with peak >= ``min_peak`` divided by its level.
    """
    peak = mask_probs.flatten(1).amax(dim=1)
    level = interior_level(mask_probs, peak)
    scale = torch.where((peak >= min_peak) & (peak > 0), level, torch.ones_like(level))
    return mask_probs / scale[:, None, None]


def _image_hw(
    image_size: Union[Sequence[int], Tensor], n: int, device: torch.device
) -> Tuple[Tensor, Tensor]:
    """(h, w) pair or (N, 2) tensor of per-row (h, w) -> two (N,) float32 tensors."""
    if isinstance(image_size, Tensor):
        size = image_size.to(device=device, dtype=torch.float32)
        if size.dim() == 1:
            size = size.expand(n, 2)
        if not torch.jit.is_tracing() and size.shape != (n, 2):  # a trace has no caller error
            raise ValueError(
                f"image_size tensor must have shape (2,) or (N, 2) = ({n}, 2), "
                f"got {tuple(size.shape)}"
            )
        return size[:, 0], size[:, 1]
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (h, w), got {image_size!r}")
    h, w = (float(v) for v in image_size)
    return (
        torch.full((n,), h, dtype=torch.float32, device=device),
        torch.full((n,), w, dtype=torch.float32, device=device),
    )


def _column_extent(
    probs: Tensor,
    c0: Tensor,
    c1: Tensor,
    r0: Tensor,
    r1: Tensor,
    n_cols: Tensor,
    n_rows: Tensor,
    threshold: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Left and right edge, along columns, of where the pasted mask reaches ``threshold`` (> 0).

    Args:
        probs: (N, R, C) float32 masks, indexed [row cell, column cell].
        c0, c1: (N,) box extent along columns, r0, r1: (N,) along rows, in image pixels
            (non-degenerate).
        n_cols, n_rows: (N,) image size along columns / rows (>= 1).

    Returns:
        left, right: (N,) float32 edges in image coordinates (inf / -inf when none): the first
        passing pixel column and one past the last one. found: (N,) bool.

    The paste samples cell coordinate q(y) = (y + 0.5 - r0) * R / (r1 - r0) - 0.5 for pixel row
    y (p(x) likewise for columns) bilinearly from the mask zero-padded by one cell. For a fixed
    column the value is linear in q between consecutive integers, so among the pixel rows whose
    q lies in [i, i + 1] the maximum is at the first or the last of them: these 2 (R + 1)
    candidate rows decide every column. Along a candidate row the value is again piecewise
    linear in p, so its passing columns are, per cell interval, one closed sub-interval of p,
    mapped back to pixel columns in closed form.
    """
    n, n_r, n_c = probs.shape
    dt, dev = probs.dtype, probs.device
    padded = F.pad(probs, (1, 1, 1, 1))  # (N, R + 2, C + 2); padded index = cell index + 1

    # Candidate rows: first and last pixel row of every cell interval [i, i + 1], i = -1..R-1.
    # Rows are clamped into the image, so every candidate is a real pixel row; an interval with
    # no pixel row inside just contributes a neighbouring row, which is harmless since each row
    # is evaluated at its own q below.
    rows_per_cell = ((r1 - r0) / n_r)[:, None]
    cell = torch.arange(-1, n_r, dtype=dt, device=dev)[None, :]
    y_lo = (cell + 0.5) * rows_per_cell + r0[:, None] - 0.5  # pixel row where q = i
    y_hi = y_lo + rows_per_cell  # pixel row where q = i + 1
    last_row = (n_rows - 1)[:, None]
    rows = torch.cat([torch.ceil(y_lo - _PIXEL_EPS), torch.floor(y_hi + _PIXEL_EPS)], dim=1)
    rows = torch.minimum(rows.clamp(min=0), last_row)  # (N, K) with K = 2 (R + 1)

    # upper bounds R and R - 1 from ``cell``, not from ``float(n_r)``: a trace keeps them a
    # function of the mask size instead of a constant
    last_cell = cell[:, -1:]  # R - 1
    q = torch.minimum(
        ((rows + 0.5 - r0[:, None]) / rows_per_cell - 0.5).clamp(min=-1.0), last_cell + 1
    )
    i = torch.minimum(torch.floor(q).clamp(min=-1.0), last_cell)
    s = (q - i)[..., None]
    # whole padded rows, picked from the (N * (R + 2), C + 2) stack: a row index per candidate
    # instead of ``gather``'s index per element (same values, several times faster)
    top = ((i + 1).long() + torch.arange(n, device=dev)[:, None] * (n_r + 2)).flatten()
    flat = padded.reshape(n * (n_r + 2), n_c + 2)
    v = flat.index_select(0, top).view(n, rows.shape[1], n_c + 2)
    # (N, K, C + 2): row profiles over padded columns -1..C
    v = v.lerp_(flat.index_select(0, top + 1).view(n, rows.shape[1], n_c + 2), s)

    # Passing part of each column interval [j, j + 1], j = -1..C-1, on one candidate row: all,
    # none, or the part on one side of the threshold crossing j + (t - a) / (b - a). Every part
    # touches j or j + 1, so the union over the candidate rows is, per interval, a left piece
    # [j, j + reach] and a right piece [j + start, j + 1]: reduce over the rows first.
    # On one row the left piece is [j, j + (a - t) / (a - b)], capped at the whole interval,
    # and none where a < t (a negative reach); the right piece is [j + (t - a) / (b - a), j + 1],
    # from 0, where b passes. Clamping the denominators to the smallest positive float keeps
    # the quotients finite-signed (no 0 / 0) and changes no crossing that lies in [0, 1];
    # (t - a) / max(b - a, tiny) is computed as the bitwise-equal d / min(e, -tiny). A row
    # whose b fails gets a start of at least 2 (none) from sign(t - b) * 2. The caps commute
    # with the reductions, so they are applied after them, on (N, C + 1).
    # Why it is written this way: on CPU a ``where`` over the (N, K, C + 1) stacks costs
    # several times an arithmetic op, ``amax`` over a middle dimension about twice
    # ``max(dim)``, and every fresh stack of that size may be page-faulted in anew; so there
    # is no ``where``, and the stacks are few and reused in place (1.5-2x faster in all at
    # 100 detections, ``scripts/bench_ops.py``).
    a, b = v[..., :-1], v[..., 1:]
    tiny = torch.finfo(dt).tiny
    d = a - threshold
    e = a - b
    if torch.jit.is_tracing():  # the same values without ``out=``, which ONNX cannot hold
        reach = (d / e.clamp(min=tiny)).max(dim=1).values.clamp(max=1.0)
        fails = (b - threshold).sign() * -2.0
        start = torch.maximum(d / e.clamp(max=-tiny), fails).min(dim=1).values.clamp(min=0.0)
    else:
        q = e.clamp(min=tiny)
        reach = torch.div(d, q, out=q).max(dim=1).values.clamp(max=1.0)  # < 0: none
        e = torch.div(d, e.clamp_(max=-tiny), out=e)
        fails = torch.sub(b, threshold, out=q).sign_().mul_(-2.0)  # sign(t - b) * 2
        start = torch.maximum(e, fails, out=e).min(dim=1).values.clamp(min=0.0)  # > 1: none
    j = torch.arange(-1, n_c, dtype=dt, device=dev)
    p_lo = torch.stack([j.expand_as(reach), j + start], dim=2)  # (N, C + 1, 2)
    p_hi = torch.stack([j + reach, (j + 1).expand_as(start)], dim=2)
    piece = torch.stack([reach >= 0, start <= 1], dim=2)

    # Back to pixel columns: x = (p + 0.5) * (c1 - c0) / C + c0 - 0.5.
    cols_per_cell = ((c1 - c0) / n_c)[:, None, None]
    offset = (c0 - 0.5)[:, None, None]
    x_lo = torch.ceil((p_lo + 0.5) * cols_per_cell + offset - _PIXEL_EPS).clamp(min=0)
    x_hi = torch.minimum(
        torch.floor((p_hi + 0.5) * cols_per_cell + offset + _PIXEL_EPS), (n_cols - 1)[:, None, None]
    )
    valid = piece & (x_lo <= x_hi)

    found = valid.flatten(1).any(dim=1)
    first = torch.where(valid, x_lo, float("inf")).flatten(1).amin(dim=1)
    last = torch.where(valid, x_hi, float("-inf")).flatten(1).amax(dim=1)
    return first, last + 1, found


def mask_boxes(
    mask_probs: Tensor,
    boxes: Tensor,
    image_size: Union[Tuple[int, int], Tensor],
    threshold: float,
) -> Tuple[Tensor, Tensor]:
    """Tight box of each soft mask pasted into the image, computed exactly in RoI space.

    Args:
        mask_probs: (N, M, M) or (N, 1, M, M) soft masks, each predicted in its box.
        boxes: (N, 4) float XYXY in the resized input image.
        image_size: (h, w) shared by all rows, or an (N, 2) integer tensor of per-row (h, w).
        threshold: a pixel is foreground when its pasted probability is >= threshold.

    Returns:
        refined: (N, 4) XYXY, dtype of ``boxes``: ``(xa, ya, xb + 1, yb + 1)`` for foreground
            pixel columns xa..xb and rows ya..yb, i.e. what ``BitMasks.get_bounding_boxes``
            gives on the mask pasted by ``paste_masks_in_image`` (whole image, no CPU window).
        found: (N,) bool, False when no pixel of the image passes, the box is degenerate
            (width or height <= 0, or non-finite) or the image is empty; such rows keep their
            input box (and its gradient: a found box is whole pixels, without one).

    Detectron2's ``paste_masks_in_image`` followed by ``BitMasks.get_bounding_boxes`` gives the
    same boxes but costs O(N * H * W) time and memory; here the cost is O(N * M^2) whatever the
    image and box sizes: nothing is pasted (see `_column_extent`); the y extent is the x extent
    of the transposed mask. Computed in float32.
    NaN mask cells count as 0 (+inf as 1). With ``threshold <= 0`` every pixel of the paste
    would count, so the result is defined as the box's own pixel extent
    ``(floor(x0), floor(y0), ceil(x1), ceil(y1))`` clipped to the image, found where that is
    non-empty.
    """
    probs = _as_mask_stack(mask_probs)
    if boxes.dim() != 2 or (
        not torch.jit.is_tracing() and (boxes.shape[1] != 4 or boxes.shape[0] != probs.shape[0])
    ):
        raise ValueError(
            f"boxes must have shape (N, 4) with N = {probs.shape[0]}, got {tuple(boxes.shape)}"
        )
    n = boxes.shape[0]
    dev = boxes.device
    if not torch.jit.is_tracing() and n == 0:  # a trace must hold the general path
        return boxes.clone(), torch.zeros(0, dtype=torch.bool, device=dev)
    h, w = _image_hw(image_size, n, dev)
    # The tight box is piecewise constant in the mask and in the input box (whole pixels), so
    # its gradient is zero almost everywhere: it is computed on detached inputs (which also
    # lets `_column_extent` work in place with autograd on). Rows that keep their input box
    # keep its gradient.
    box = boxes.detach().to(torch.float32)
    x0, y0, x1, y1 = box.unbind(dim=1)
    ok = torch.isfinite(box).all(dim=1) & (x1 > x0) & (y1 > y0) & (h >= 1) & (w >= 1)

    if threshold <= 0:
        xa = torch.minimum(torch.floor(x0).clamp(min=0), w)
        ya = torch.minimum(torch.floor(y0).clamp(min=0), h)
        xb = torch.minimum(torch.ceil(x1), w).clamp(min=0)
        yb = torch.minimum(torch.ceil(y1), h).clamp(min=0)
        refined = torch.stack([xa, ya, xb, yb], dim=1)
        found = ok & (xb > xa) & (yb > ya)
        return torch.where(found[:, None], refined.to(boxes.dtype), boxes), found

    # Degenerate rows are computed on a dummy unit box (and a 1x1 image) and then discarded.
    # (Python scalars, not a tensor made on the host: no host-to-device copy.)
    x0, y0 = torch.where(ok, x0, 0.0), torch.where(ok, y0, 0.0)
    x1, y1 = torch.where(ok, x1, 1.0), torch.where(ok, y1, 1.0)
    h = torch.where(ok, h, torch.ones_like(h))
    w = torch.where(ok, w, torch.ones_like(w))
    p = finite_probs(probs.detach().to(torch.float32))

    xa, xb, found_x = _column_extent(p, x0, x1, y0, y1, w, h, threshold)
    ya, yb, found_y = _column_extent(p.transpose(1, 2), y0, y1, x0, x1, h, w, threshold)
    found = ok & found_x & found_y
    tight = torch.stack([xa, ya, xb, yb], dim=1)
    return torch.where(found[:, None], tight.to(boxes.dtype), boxes), found


def resample_masks(mask_probs: Tensor, boxes: Tensor, new_boxes: Tensor) -> Tensor:
    """Resample masks predicted in ``boxes`` into ``new_boxes`` (no second mask-head pass).

    Args:
        mask_probs: (N, M, M) or (N, 1, M, M) soft masks, each in the RoI frame of its box.
        boxes, new_boxes: (N, 4) XYXY in the same image frame.

    Returns:
        (N, M, M): cell (i, j) of a new mask is the old mask's value at the image point of that
        cell's centre, sampled as Detectron2's paste does (bilinear, zero outside the old mask's
        padded support). So pasting the result in ``new_boxes`` reproduces pasting the old mask
        in ``boxes``, up to the second interpolation. A degenerate old box gives a zero mask.
    """
    probs = _as_mask_stack(mask_probs)
    n, m = probs.shape[0], probs.shape[-1]
    if not torch.jit.is_tracing() and n == 0:  # a trace must hold the general path
        return probs.clone()
    dt = probs.dtype if probs.is_floating_point() else torch.float32
    b, nb = boxes.to(dt), new_boxes.to(dt)
    t = (torch.arange(m, device=probs.device, dtype=dt) + 0.5) / m  # cell centres in [0, 1]
    size = b[:, 2:] - b[:, :2]
    ok = (size > 0).all(dim=1)
    size = torch.where(ok[:, None], size, torch.ones_like(size))
    # image coordinates of the new cells' centres, then normalised into the old box ([-1, 1]
    # spans the box edges with align_corners=False, as in the paste)
    pts = nb[:, None, :2] + t[None, :, None] * (nb[:, None, 2:] - nb[:, None, :2])  # (N, M, 2)
    g = (pts - b[:, None, :2]) / size[:, None, :] * 2 - 1
    grid = torch.stack([g[:, None, :, 0].expand(n, m, m), g[:, :, None, 1].expand(n, m, m)], -1)
    out = F.grid_sample(
        probs[:, None].to(dt), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[:, 0]
    return torch.where(ok[:, None, None], out, torch.zeros_like(out))


def _validate_soft_nms(method: str, iou_threshold: float, sigma: float, min_score: float) -> None:
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"method must be one of {SOFT_NMS_METHODS}, got {method!r}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if not sigma > 0.0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not min_score >= 0.0:
        raise ValueError(f"min_score must be >= 0, got {min_score}")


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    method: str = "linear",
    iou_threshold: float = SOFT_NMS_IOU_THRESH,
    sigma: float = SOFT_NMS_SIGMA,
    min_score: float = SOFT_NMS_MIN_SCORE,
    topk: int = -1,
    topk_by: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017), independently per category.

    Args:
        boxes: (N, 4) XYXY; scores: (N,); idxs: (N,) int64 category of each box.
        method: "linear" (score *= 1 - IoU when IoU > iou_threshold), "gaussian"
            (score *= exp(-IoU^2 / sigma), always) or "hard" (drop when IoU > iou_threshold,
            i.e. plain NMS: with ``min_score=0`` and untied scores it keeps what
            ``torchvision.ops.batched_nms`` keeps).
        min_score: boxes whose (decayed) score is below it are discarded, inputs included.
        topk: keep at most this many results (all when < 0); per segment of ``topk_by``.
        topk_by: optional (N,) int64 segment of each box (e.g. its image in a batch), each
            category lying within one segment: ``topk`` then applies to each segment.

    Returns:
        keep: (K,) int64 indices into the input; new_scores: (K,) decayed scores, dtype of
        ``scores``. Sorted by decayed score descending, ties by lower input index.

    Per category: repeatedly pick the remaining box with the highest current score (ties: the
    lowest input index), record it with its current score, decay the other remaining boxes by
    their IoU with it. IoU as torchvision's ``box_iou`` (no +1, 0 when the union is 0).

    torchvision and Detectron2 only offer hard NMS, hence this implementation. Categories are
    laid out padded as (G, L) and the L sequential steps are each vectorised over all G
    categories; each pick's decay of the others is read from a (G, L, L) table made once
    where that table is small, else computed from its IoU on the fly, (G, L) per step. With
    ``topk``, the steps stop once no further pick can enter any segment's top ``topk``: a
    category's picks come out in non-increasing score order and scores only decay, so a segment
    is settled when ``topk`` of its picks score above every score still live in it. The result
    is that of running every step (tested), at a fraction of the steps when candidates are
    many and ``topk`` is small (a detector's 100 per image).
    """
    _validate_soft_nms(method, iou_threshold, sigma, min_score)
    if torch.jit.is_tracing():
        if topk_by is not None:
            raise RuntimeError(
                "batched_soft_nms cannot be traced with topk_by (a top-k per segment, e.g. "
                "per image of a batch): trace one segment (one image) with topk_by=None"
            )
        return soft_nms_in_order(boxes, scores, idxs, method, iou_threshold, sigma, min_score, topk)
    dev = scores.device
    empty = (torch.zeros(0, dtype=torch.int64, device=dev), scores.new_zeros(0))
    if scores.numel() == 0:
        return empty

    # Inputs already below min_score never take part.
    cand = torch.nonzero(scores >= min_score).squeeze(1)  # ascending input index
    if cand.numel() == 0:
        return empty
    if topk == 0:
        return empty
    cat_ids, group = torch.unique(idxs[cand], return_inverse=True)
    n_groups = cat_ids.numel()
    segment = None  # (G,) segment of each category, 0..n_seg-1, when topk applies per segment
    n_seg = 1
    if topk > 0 and topk_by is not None:
        if topk_by.shape != idxs.shape:
            raise ValueError(
                f"topk_by must have the shape of idxs {tuple(idxs.shape)}, "
                f"got {tuple(topk_by.shape)}"
            )
        seg_of_cand = topk_by[cand].to(torch.int64)
        segment = torch.zeros(n_groups, dtype=torch.int64, device=dev).scatter_(
            0, group, seg_of_cand
        )
        if not bool((segment[group] == seg_of_cand).all()):
            raise ValueError("topk_by: every category of idxs must lie within one segment")
        seg_ids, segment = torch.unique(segment, return_inverse=True)
        n_seg = seg_ids.numel()
    elif topk > 0:
        segment = torch.zeros(n_groups, dtype=torch.int64, device=dev)
    order = torch.sort(group, stable=True).indices  # by category, then by input index
    counts = _group_counts(group, n_groups)
    starts = torch.cumsum(counts, 0) - counts
    g_sorted = group[order]
    slot = torch.arange(order.numel(), device=dev) - starts[g_sorted]
    width = int(counts.max())

    # Padded (G, L) layout. A dead box (suppressed, picked, below min_score or an empty slot)
    # has current score -inf, so argmax never picks it while its group has a live box.
    src = torch.full((n_groups, width), -1, dtype=torch.int64, device=dev)
    src[g_sorted, slot] = cand[order]
    live = src >= 0
    src0 = src.clamp(min=0)
    work = torch.promote_types(torch.promote_types(scores.dtype, boxes.dtype), torch.float32)
    neg_inf = torch.full((), float("-inf"), dtype=work, device=dev)  # no host-to-device copy
    cur = torch.where(live, scores[src0].to(work), neg_inf)
    bx = boxes[src0].to(work)  # (G, L, 4)
    area = (bx[..., 2] - bx[..., 0]) * (bx[..., 3] - bx[..., 1])
    # Each step decays the live boxes by their IoU with the pick. Where the (G, L, L) table of
    # every pair's decay is small, it is made once and a step reads the pick's row of it: a
    # third of the operations per step, the same values (the same elementwise arithmetic).
    # Larger layouts compute each pick's IoU on the fly, (G, L) per step.
    table = None
    if n_groups * width * width <= _SOFT_NMS_TABLE_SIZE:
        iou = _iou_with_pick(bx[:, None], area[:, None], bx[:, :, None], area[:, :, None])
        table = _decay_table(iou, method, iou_threshold, sigma).view(n_groups * width, width)
        row0 = torch.arange(n_groups, device=dev)[:, None] * width  # (G, 1) first row of each
    else:
        feats = torch.cat([bx, area[..., None]], dim=2)  # (G, L, 5): box and area, one gather

    picks, picked_scores = [], []
    for step in range(width):
        best = torch.argmax(cur, dim=1, keepdim=True)  # (G, 1); first max = lowest index
        best_score = cur.gather(1, best)
        picks.append(best)
        picked_scores.append(best_score)
        # Stop once a step found no live box in any group, or once every segment's top-k is
        # settled, which includes the former (checked sparingly: each check is a host sync).
        if step % 8 == 7:
            if segment is None:
                if not bool(torch.isfinite(best_score).any()):
                    break
            elif _topk_settled(torch.cat(picked_scores, dim=1), cur, best, segment, n_seg, topk):
                break
        cur = cur.scatter(1, best, float("-inf"))
        if table is not None:
            decay = table.index_select(0, (row0 + best).view(-1))  # (G, L): the pick's row
        else:
            pb = feats.gather(1, best[..., None].expand(-1, -1, 5))  # (G, 1, 5)
            iou = _iou_with_pick(bx, area, pb[..., :4], pb[..., 4])
            decay = _decay_table(iou, method, iou_threshold, sigma)
        cur = _decayed(cur, decay, method, neg_inf)
        # Kill below min_score; this also turns -inf * 0 = NaN of dead boxes back into -inf.
        cur = torch.where(cur >= min_score, cur, neg_inf)

    picked_src = src.gather(1, torch.cat(picks, dim=1))
    picked_score = torch.cat(picked_scores, dim=1)
    taken = torch.isfinite(picked_score).flatten().nonzero().squeeze(1)  # one host sync
    keep = picked_src.flatten()[taken]
    new_scores = picked_score.flatten()[taken]
    # Sort by score descending, ties by lower input index: index sort, then a stable score sort.
    by_index = torch.argsort(keep)
    keep, new_scores = keep[by_index], new_scores[by_index]
    by_score = torch.sort(new_scores, descending=True, stable=True).indices
    keep, new_scores = keep[by_score], new_scores[by_score]
    if segment is not None:
        # rank of each result inside its segment (results are sorted by score)
        seg = segment[group[torch.searchsorted(cand, keep)]]
        order = torch.sort(seg, stable=True).indices
        counts = _group_counts(seg, n_seg)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=dev) - starts[seg[order]]
        top = (rank < topk).nonzero().squeeze(1)  # one host sync for both
        keep, new_scores = keep[top], new_scores[top]
    return keep, new_scores.to(scores.dtype)


def _iou_with_pick(boxes: Tensor, area: Tensor, pick: Tensor, pick_area: Tensor) -> Tensor:
    """IoU of boxes (..., 4) XYXY with areas (...) against a picked box (..., 4) with area
    (...), broadcast: torchvision's ``box_iou`` (no +1), 0 for an empty union (0 / 0), as
    torchvision gives on degenerate pairs."""
    lt = torch.maximum(boxes[..., :2], pick[..., :2])
    rb = torch.minimum(boxes[..., 2:], pick[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return torch.nan_to_num(inter / (area + pick_area - inter), nan=0.0)


def _decay_table(iou: Tensor, method: str, iou_threshold: float, sigma: float) -> Tensor:
    """Soft-NMS's factor on a score by its ``iou`` with the pick, elementwise: "linear"
    1 - IoU above ``iou_threshold`` (else 1), "gaussian" exp(-IoU^2 / ``sigma``), "hard" 0
    above ``iou_threshold`` (suppressed) else 1."""
    if method == "linear":
        return torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
    if method == "gaussian":
        return torch.exp(-(iou * iou) / sigma)
    return (iou <= iou_threshold).to(iou.dtype)


def _decayed(cur: Tensor, decay: Tensor, method: str, dead: Tensor) -> Tensor:
    """The current scores ``cur`` decayed by the pick's factors ``decay``
    (:func:`_decay_table`): multiplied, or with "hard" ``dead`` where suppressed (0)."""
    if method == "hard":
        return torch.where(decay > 0, cur, dead)
    return cur * decay


def _group_counts(group: Tensor, n: int) -> Tensor:
    """(n,) int64 number of entries of each group 0..n-1 in ``group`` (N,) int64.

    ``torch.bincount`` with ``minlength`` reads the largest entry on the host (a sync on
    CUDA); with ``n`` known on the host, a scatter-add needs none.
    """
    return torch.zeros(n, dtype=torch.int64, device=group.device).index_add_(
        0, group, torch.ones_like(group)
    )


def _topk_settled(
    picked: Tensor, cur: Tensor, last: Tensor, segment: Tensor, n_seg: int, topk: int
) -> bool:
    """Whether no further Soft-NMS pick can enter any segment's top ``topk``.

    picked: (G, S) scores picked so far per category (-inf: none); cur: (G, L) current
    scores, -inf for dead boxes, before the last pick ``last`` (G, 1) is marked dead;
    segment: (G,) segment of each category, in 0..n_seg-1. A segment is settled when it has no
    live box left, or when ``topk`` of its picks score strictly above its highest live score (later
    picks score at most that; strictly, so that ties cannot reorder).
    """
    live = cur.scatter(1, last, float("-inf")).amax(dim=1)  # (G,) best score still live
    neg_inf = torch.full((n_seg,), float("-inf"), dtype=live.dtype, device=live.device)
    seg_live = neg_inf.scatter_reduce(0, segment, live, reduce="amax")
    above = (picked > seg_live[segment][:, None]).sum(dim=1)
    seg_above = torch.zeros(n_seg, dtype=above.dtype, device=above.device).index_add_(
        0, segment, above
    )
    settled = torch.isneginf(seg_live) | (seg_above >= topk)
    return bool(settled.all())


@torch.jit.script_if_tracing
def soft_nms_in_order(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    method: str,
    iou_threshold: float,
    sigma: float,
    min_score: float,
    topk: int,
) -> Tuple[Tensor, Tensor]:
    """:func:`batched_soft_nms` (no ``topk_by``) computed one pick at a time, in output order:
    the form a trace or an ONNX graph can hold. Arguments and results as there.

    Each step picks the live box with the highest current score over all categories (ties:
    the lowest input index) and decays the live boxes of its category. A category's picks are
    those of per-category Soft-NMS, since only its own picks decay it, and scores only decay,
    so the picks come out in the output order: the first ``topk`` steps give the result.
    The step count is fixed by the input size, ``min(candidates, topk)``, and the buffers are
    preallocated, so the loop has no data-dependent exit or shape: TorchScript and ONNX
    (``Loop``) replay it for any number of boxes. Each step costs O(N), against O(G * L) for
    all categories at once in :func:`batched_soft_nms`, which eager inference keeps (fewer
    steps on a batch). Scripted when called under tracing.
    """
    work = torch.float64 if scores.dtype == torch.float64 else torch.float32
    cand = torch.nonzero(scores >= min_score).squeeze(1)  # ascending input index
    bx = boxes[cand].to(work)
    cur = scores[cand].to(work)
    cats = idxs[cand]
    area = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
    dead = torch.full_like(cur, float("-inf"))
    n = cand.shape[0]
    steps = n if topk < 0 else min(n, topk)
    picks = torch.zeros(steps, dtype=torch.int64, device=scores.device)
    picked = torch.full((steps,), float("-inf"), dtype=work, device=scores.device)
    for step in range(steps):
        best = torch.argmax(cur)  # first max; all dead: a dead box, recorded as -inf
        picks[step] = best
        picked[step] = cur[best]
        iou = _iou_with_pick(bx, area, bx[best], area[best])
        decayed = _decayed(cur, _decay_table(iou, method, iou_threshold, sigma), method, dead)
        decayed = torch.where(cats == cats[best], decayed, cur)
        # below min_score dies; this also turns -inf * 0 = NaN of dead boxes back into -inf
        cur = torch.where(decayed >= min_score, decayed, dead).index_fill(
            0, best.view(1), float("-inf")
        )
    taken = torch.isfinite(picked)
    return cand[picks[taken]], picked[taken].to(scores.dtype)


def piecewise_linear(x: Tensor, knots: Sequence[Tuple[float, float]]) -> Tensor:
    """The piecewise-linear map through ``knots`` ((x0, y0), ..., (xk, yk), x strictly
    increasing) applied to ``x`` (any shape), constant beyond the first and last knot; dtype
    and shape of ``x``.

    Written as a sum of clamped ramps, one per segment, rather than with ``searchsorted``:
    elementwise operations only, which a trace and ONNX hold (ONNX has no searchsorted).
    Strictly increasing between the first and last knot where the y are.
    """
    if len(knots) < 2:
        raise ValueError(f"piecewise_linear needs at least two knots, got {len(knots)}")
    v = x.to(torch.promote_types(x.dtype, torch.float32))
    # the knots as Python numbers (a tensor made from them would be a trace's constant, with
    # a warning): one clamped ramp per segment, added in turn
    out = torch.zeros_like(v) + float(knots[0][1])
    for (x0, y0), (x1, y1) in zip(knots, knots[1:]):
        ramp = ((v - float(x0)) * (1.0 / (float(x1) - float(x0)))).clamp(0.0, 1.0)
        out = out + ramp * (float(y1) - float(y0))
    # the sum's rounding may step past the last knot's y (a score of 1 mapped to 1 + 1 ulp)
    return out.clamp(max=float(knots[-1][1])).to(x.dtype)


def knot_table(maps: Sequence[Sequence[Tuple[float, float]]]) -> Tensor:
    """(C, K, 2) float32 tensor of C piecewise-linear maps' knots (x, y), for
    :func:`class_piecewise_linear`; K the most knots of a map. A map with fewer knots is padded
    by knots of its last y at x = last x + 1, + 2, ...: flat segments beyond the last knot,
    which leave the map unchanged (and divide by no zero width).

    Made on the host from Python numbers: under a trace it would be a constant made with a
    warning, so the heads make it when their parameters are set and hold it as a buffer.
    """
    if len(maps) == 0 or any(len(m) < 2 for m in maps):
        raise ValueError("knot_table needs at least one map, each of at least two knots")
    k = max(len(m) for m in maps)
    rows = []
    for m in maps:
        (x_last, y_last) = m[-1]
        pad = [(float(x_last) + j, float(y_last)) for j in range(1, k - len(m) + 1)]
        rows.append([(float(x), float(y)) for x, y in m] + pad)
    return torch.tensor(rows, dtype=torch.float32)


def class_piecewise_linear(x: Tensor, classes: Tensor, table: Tensor) -> Tensor:
    """Each element of ``x`` (N,) mapped by the piecewise-linear map of its class: row
    ``classes[i]`` of ``table`` (C, K, 2) knots (:func:`knot_table`), constant beyond the
    first and last knot; dtype of ``x``.

    The per-row counterpart of :func:`piecewise_linear` (the same clamped ramps, all segments
    at once on the rows' gathered knots), vectorised over rows and classes: no loop over
    classes, so its cost does not grow with their number.
    """
    if x.dim() != 1 or (not torch.jit.is_tracing() and classes.shape != x.shape):
        raise ValueError(
            f"x and classes must both have shape (N,), got {tuple(x.shape)} and "
            f"{tuple(classes.shape)}"
        )
    knots = table.to(x.device)[classes.long()]  # (N, K, 2)
    kx, ky = knots[..., 0], knots[..., 1]
    v = x.to(torch.promote_types(x.dtype, torch.float32))[:, None]
    ramp = ((v - kx[:, :-1]) / (kx[:, 1:] - kx[:, :-1])).clamp(0.0, 1.0)
    out = ky[:, 0] + (ramp * (ky[:, 1:] - ky[:, :-1])).sum(dim=1)
    # the sum's rounding may step past the last knot's y (a score of 1 mapped to 1 + 1 ulp)
    return torch.minimum(out, ky[:, -1]).to(x.dtype)
