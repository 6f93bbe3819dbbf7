"""The mask head's inference on Turbo's path, for Detectron2's ``MaskRCNNConvUpsampleHead``:
the same layers and weights, run in channels-last memory, with the predictor computing each
row's own class only.

Detectron2's head runs in the pooler's NCHW layout, where oneDNN's transposed convolution on
a CPU is several times slower than in channels-last, and its 1x1 predictor computes the mask
of every class before ``mask_rcnn_inference`` keeps the one of the detected class (an LVIS
head: 1,230 masks computed per detection to keep one). Neither has a switch upstream, so
:func:`selected_mask_logits` calls the head's own layers but the predictor, and reduces the
predictor to the selected class's weights. Its probabilities are upstream's up to float
rounding (tested); ``docs/results/profile.md`` measures both.

Memory, on a CPU: a fresh buffer of a few megabytes is page-faulted in anew at each call, and
the 2x-upsampled maps are the largest (N x C x 28 x 28 floats: 30 MB for 100 boxes of a
256-channel head). So the ReLU after the upsampling runs in place, and the selected-class
product, which would otherwise make one more map of that size, runs :data:`PRODUCT_ROWS` rows
at a time (the same per-row sums, so the same values).
"""

from __future__ import annotations

import torch
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from torch import Tensor, nn

__all__ = ["supports_selected_masks", "selected_mask_logits", "PRODUCT_ROWS"]

# Rows of the selected-class product computed at once: its temporary (rows x C x 28 x 28
# floats, 6.4 MB for a 256-channel head) is reused from one step to the next instead of
# faulted in anew for all N rows (about 4x faster for 50 boxes of a 256-channel head).
PRODUCT_ROWS = 8


def supports_selected_masks(mask_head: nn.Module) -> bool:
    """Whether :func:`selected_mask_logits` computes what ``mask_head`` computes: Detectron2's
    ``MaskRCNNConvUpsampleHead`` itself (a subclass may change its layers or its output)."""
    return type(mask_head) is MaskRCNNConvUpsampleHead


def selected_mask_logits(head: MaskRCNNConvUpsampleHead, x: Tensor, classes: Tensor) -> Tensor:
    """(N, M, M) mask logits of each row's class (class-agnostic heads: their one mask).

    Args:
        head: a ``MaskRCNNConvUpsampleHead`` (:func:`supports_selected_masks`).
        x: (N, C, M/2, M/2) features the mask pooler gives for N boxes.
        classes: (N,) int64 class of each row.

    What ``head.layers(x)[arange(N), classes]`` gives (``[:, 0]`` class-agnostic), in
    channels-last memory, with the predictor's 1x1 convolution computed for the selected
    classes only.
    """
    *layers, predictor = list(head)
    if predictor is not head.predictor:
        raise ValueError("the mask head's last layer is not its predictor")
    y = x.contiguous(memory_format=torch.channels_last)
    for layer in layers:
        # the head's own ``nn.ReLU`` (after the upsampling) in place: its input is a fresh map
        # that nothing else holds (and a transposed convolution needs not its output for its
        # gradient, so autograd is served too)
        y = torch.relu_(y) if type(layer) is nn.ReLU else layer(y)
    weight = predictor.weight[:, :, 0, 0]  # (K, C)
    # (``out_channels``, not the weight's shape: a trace records shapes as tensors)
    k = predictor.out_channels
    bias = predictor.bias if predictor.bias is not None else weight.new_zeros(k)
    if k == 1:  # class-agnostic: one mask for every row
        weight, bias = weight.expand(y.shape[0], -1), bias.expand(y.shape[0])
    else:
        weight, bias = weight[classes], bias[classes]
    # a product and a sum over channels, contiguous in channels-last memory (as fast as the
    # full predictor's convolution for a handful of classes, and K times less work for K)
    weight, bias = weight.to(y.dtype), bias.to(y.dtype)
    return _row_dot(y, weight) + bias[:, None, None]


def _row_dot(y: Tensor, weight: Tensor) -> Tensor:
    """(N, H, W): each row of ``y`` (N, C, H, W) summed over channels with its own ``weight``
    (N, C), :data:`PRODUCT_ROWS` rows at a time (module docstring: memory). A trace takes all
    rows at once: a loop over a row count would be recorded for the traced image's count."""
    if torch.jit.is_tracing():
        return (y * weight[:, :, None, None]).sum(dim=1)
    steps = zip(y.split(PRODUCT_ROWS), weight.split(PRODUCT_ROWS))
    return torch.cat([(a * b[:, :, None, None]).sum(dim=1) for a, b in steps])
