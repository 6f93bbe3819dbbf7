"""Detectron2's paste as the reference of ``turbo.ops.mask_boxes``: the tight boxes of the
masks ``paste_masks_in_image`` pastes into the image. Needs only the installed package (no
repository files).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import BitMasks
from torch import Tensor

__all__ = ["pasted_mask_boxes"]


def pasted_mask_boxes(
    masks: Tensor,
    boxes: Tensor,
    image_size: Tuple[int, int],
    threshold: float,
    whole_image: bool = True,
) -> Tuple[Tensor, Tensor]:
    """Tight boxes of the masks pasted by Detectron2 (``paste_masks_in_image`` + ``BitMasks``):
    the reference of ``turbo.ops.mask_boxes``. Returns boxes (N, 4) and found (N,) bool.

    On CPU, ``paste_masks_in_image`` fills only the box +- 1 pixel, which cuts the up to half
    a mask cell its bilinear paste spills beyond the box. With ``whole_image`` (the GPU's
    semantics) each mask is padded with one zero cell per side and its box grown by one cell
    per side: the same zero-padded bilinear function (cell centres stay put), whose window
    then covers the whole spill.
    """
    h, w = image_size
    if not whole_image:
        bit = BitMasks(paste_masks_in_image(masks, boxes, image_size, threshold=threshold))
        return bit.get_bounding_boxes().tensor, bit.nonempty()
    m = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))
    cw = (boxes[:, 2] - boxes[:, 0]) / m
    ch = (boxes[:, 3] - boxes[:, 1]) / m
    big = boxes + torch.stack([-cw, -ch, cw, ch], dim=1)
    # Detectron2's CPU window fails (arange with lower > upper bound) for a box whose window
    # misses the image entirely; such a mask has no pixel in the image and stays all False.
    hits = (
        (big[:, 0].floor() - 1 < w)
        & (big[:, 2].ceil() + 1 > 0)
        & (big[:, 1].floor() - 1 < h)
        & (big[:, 3].ceil() + 1 > 0)
    )
    pasted = torch.zeros(len(masks), h, w, dtype=torch.bool, device=masks.device)
    if bool(hits.any()):
        pasted[hits] = paste_masks_in_image(
            padded[hits], big[hits], image_size, threshold=threshold
        )
    bit = BitMasks(pasted)
    return bit.get_bounding_boxes().tensor, bit.nonempty()
