"""Testing and benchmarking support (as Detectron2 keeps ``detectron2.utils.testing``):
non-trivial weights for randomly initialised models, synthetic inputs and detections,
Detectron2's paste as the reference of ``mask_boxes``, assertions on outputs, and a counter
of host syncs. Everything here needs only the installed package (no repository files).
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import BitMasks, Boxes, Instances
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = [
    "randomize_heads",
    "zero_box_regression",
    "make_images",
    "clone_inputs",
    "random_soft_masks",
    "coco_like_candidates",
    "lvis_like_candidates",
    "pasted_mask_boxes",
    "assert_same_instances",
    "assert_valid_roi_outputs",
    "assert_valid_model_outputs",
    "assert_masks_predicted_in_boxes",
    "assert_pasted_masks_inside_boxes",
    "SYNC_OPS",
    "count_host_syncs",
]


def randomize_heads(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give the box and mask predictors non-trivial weights, so that a randomly initialised
    model yields varied scores, boxes and masks (Detectron2 initialises them near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cls_score" in name or "mask_head.predictor" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.5))
            elif "bbox_pred" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return model


def zero_box_regression(model: nn.Module) -> nn.Module:
    """Zero the RPN's and the box head's regression (every cascade stage), in place: the
    proposals are the anchors and the boxes the proposals, so that a randomly initialised
    model yields distinct boxes inside the image, as a trained one does (random regression
    on unnormalised features throws boxes off the image)."""
    heads = model.roi_heads
    predictors = (
        heads.box_predictor
        if isinstance(heads.box_predictor, nn.ModuleList)
        else [heads.box_predictor]
    )
    with torch.no_grad():
        for layer in [model.proposal_generator.rpn_head.anchor_deltas] + [
            p.bbox_pred for p in predictors
        ]:
            layer.weight.zero_()
            layer.bias.zero_()
    return model


def make_images(
    sizes: Sequence[Tuple[int, int]] = ((64, 96), (80, 64)), seed: int = 0
) -> List[dict]:
    """Detectron2 inputs: CHW float images in [0, 255] (BGR), with a few bright blobs so that
    proposals differ between locations."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        img = torch.rand(3, h, w, generator=g) * 255
        for _ in range(3):
            y = torch.randint(0, max(h - 8, 1), (1,), generator=g)
            x = torch.randint(0, max(w - 8, 1), (1,), generator=g)
            img[:, y : y + 16, x : x + 20] = 255
        out.append({"image": img, "height": h, "width": w})
    return out


def clone_inputs(inputs: List[dict]) -> List[dict]:
    """Shallow copies of Detectron2 inputs (a model may add keys to them)."""
    return [copy.copy(x) for x in inputs]


def random_soft_masks(
    n: int, m: int, h: int, w: int, device: str = "cpu", seed: int = 0
) -> Tuple[Tensor, Tensor]:
    """n blob-like soft masks (n, m, m) and their boxes (n, 4) XYXY inside an h x w image."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 0.8 - 0.4
    r = torch.rand(n, 1, 1, generator=g) * 0.5 + 0.3
    d = ((xx[None] - c[:, 0, None, None]) ** 2 + (yy[None] - c[:, 1, None, None]) ** 2).sqrt()
    probs = torch.sigmoid((r - d) * 12 + torch.randn(n, m, m, generator=g) * 0.5)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 8
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh)
    return probs.to(device), torch.cat([xy, xy + wh], 1).to(device)


def coco_like_candidates(
    n_objects: int = 100,
    per_object: int = 20,
    num_classes: int = 80,
    h: int = 800,
    w: int = 1333,
    seed: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Box-head candidates as a detector yields them (boxes (N, 4), scores (N,), classes
    (N,)): clusters of jittered boxes around objects, each spread over a few classes."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n_objects, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
    xy = torch.rand(n_objects, 2, generator=g) * (torch.tensor([w, h]) - wh)
    centre = torch.cat([xy, xy + wh], 1).repeat_interleave(per_object, 0)
    size = wh.repeat(1, 2).repeat_interleave(per_object, 0)
    boxes = centre + torch.randn(len(centre), 4, generator=g) * size * 0.08
    boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], 1)
    base_cls = torch.randint(0, num_classes, (n_objects,), generator=g)
    cls = (
        base_cls.repeat_interleave(per_object) + torch.randint(0, 3, (len(boxes),), generator=g) * 7
    ) % num_classes
    scores = torch.rand(len(boxes), generator=g) * 0.9 + 0.05
    return boxes, scores, cls


def lvis_like_candidates(
    n_proposals: int = 1000,
    per_proposal: int = 20,
    num_classes: int = 1203,
    score_thresh: float = 1e-4,
    h: int = 800,
    w: int = 1333,
    seed: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Box-head candidates of a long-tailed (LVIS-like) detector at a low score threshold
    (boxes (N, 4), scores (N,), classes (N,), N = ``n_proposals * per_proposal``): proposals
    clustered around a hundred objects, each proposal passing the threshold for
    ``per_proposal`` classes (its object's class and others), scores log-uniform in
    [``score_thresh``, 1], so most of them are tiny as a softmax over many classes gives."""
    g = torch.Generator().manual_seed(seed)
    n_objects = 100
    boxes, _, _ = coco_like_candidates(n_objects, n_proposals // n_objects, 1, h, w, seed)
    obj_cls = torch.randint(0, num_classes, (n_objects,), generator=g)
    first = obj_cls.repeat_interleave(n_proposals // n_objects)
    others = torch.randint(0, num_classes, (len(boxes), per_proposal - 1), generator=g)
    cls = torch.cat([first[:, None], others], dim=1).flatten()
    boxes = boxes.repeat_interleave(per_proposal, 0)
    log_lo = math.log(score_thresh)
    scores = torch.exp(log_lo + torch.rand(len(cls), generator=g) * -log_lo)
    return boxes, scores, cls


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


# ------------------------------------------------------------------------------------------
# Assertions on outputs
# ------------------------------------------------------------------------------------------
def _field(x: Instances, name: str) -> Tensor:
    v = x.get(name)
    return v.tensor if isinstance(v, Boxes) else v


def assert_same_instances(a: Instances, b: Instances, exact: bool = True) -> None:
    """Same image size, fields and rows; values equal (``exact``) or close (floats)."""
    assert a.image_size == b.image_size and len(a) == len(b)
    assert set(a.get_fields()) == set(b.get_fields())
    for f in a.get_fields():
        if exact or _field(a, f).dtype in (torch.bool, torch.long):
            assert torch.equal(_field(a, f), _field(b, f)), f
        else:
            torch.testing.assert_close(
                _field(a, f), _field(b, f), rtol=1e-4, atol=1e-4, msg=lambda m, f=f: f"{f}: {m}"
            )


def assert_valid_roi_outputs(
    inst: Instances, mask_size: int = 28, probabilities: bool = True
) -> None:
    """ROI-head outputs: finite fields, boxes (N, 4), scores in [0, 1] sorted (descending),
    masks (N, 1, M, M) probabilities in [0, 1] (with ``probabilities`` False, in [0, 2]: each
    divided by a level at least half its peak, ``mask_edge`` "half_interior"), Maskness in
    [0, 1]."""
    n = len(inst)
    b = inst.pred_boxes.tensor
    assert b.shape == (n, 4) and torch.isfinite(b).all()
    assert inst.scores.shape == (n,) and torch.isfinite(inst.scores).all()
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    assert torch.all((inst.scores >= 0) & (inst.scores <= 1))
    assert inst.pred_masks.shape == (n, 1, mask_size, mask_size)
    assert torch.isfinite(inst.pred_masks).all()
    top = 1.0 if probabilities else 2.0
    assert torch.all((inst.pred_masks >= 0) & (inst.pred_masks <= top))
    if inst.has("maskness"):
        assert torch.isfinite(inst.maskness).all()
        assert torch.all((inst.maskness >= 0) & (inst.maskness <= 1))


def assert_valid_model_outputs(outputs: List[dict], inputs: List[dict], masks: bool = True) -> None:
    """A model's postprocessed outputs: in the original image frame, boxes inside the image,
    finite scores, boolean image-sized masks."""
    for r, x in zip(outputs, inputs):
        inst = r["instances"]
        h, w = x["height"], x["width"]
        assert inst.image_size == (h, w)
        if masks:
            assert inst.pred_masks.shape == (len(inst), h, w)
            assert inst.pred_masks.dtype == torch.bool
        b = inst.pred_boxes.tensor
        assert torch.isfinite(b).all() and torch.isfinite(inst.scores).all()
        assert torch.all(b[:, :2] >= 0) and torch.all(b[:, 2] <= w) and torch.all(b[:, 3] <= h)
        assert torch.all(b[:, 2:] >= b[:, :2])


def assert_masks_predicted_in_boxes(
    heads, features: Dict[str, Tensor], outputs: List[Instances]
) -> None:
    """Every output mask is the mask head's prediction in its output box."""
    again = heads.forward_with_given_boxes(
        features,
        [
            Instances(o.image_size, pred_boxes=o.pred_boxes, pred_classes=o.pred_classes)
            for o in outputs
        ],
    )
    for o, a in zip(outputs, again):
        torch.testing.assert_close(o.pred_masks, torch.nan_to_num(a.pred_masks, nan=0.0))


def assert_pasted_masks_inside_boxes(masks: Tensor, boxes: Tensor, mask_size: int = 28) -> None:
    """Pasted (N, H, W) boolean masks lie in their (N, 4) boxes, give or take the half mask
    cell the bilinear paste may spill, and a pixel."""
    for m, b in zip(masks, boxes):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(xs) == 0:
            continue
        slack = (b[2:] - b[:2]) / mask_size + 1
        assert xs.min() >= b[0] - slack[0] and xs.max() + 1 <= b[2] + slack[0]
        assert ys.min() >= b[1] - slack[1] and ys.max() + 1 <= b[3] + slack[1]


# Operators that make the host wait for the device (on CUDA): reading a value (item, bool),
# outputs whose size depends on values (nonzero, boolean indexing, unique, masked_select,
# repeat_interleave without output_size: all call one of these inside, which the profiler
# records), bincount (reads the max), equal, and tensors made from host data (copied to the
# device without non_blocking).
SYNC_OPS = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::item",
        "aten::is_nonzero",
        "aten::nonzero",
        "aten::nonzero_numpy",
        "aten::argwhere",
        "aten::masked_select",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::unique_dim_consecutive",
        "aten::bincount",
        "aten::equal",
        "aten::allclose",
        "aten::lift_fresh",
    }
)
# Tensor methods that read device memory on the host without an operator the profiler sees
# on CPU tensors.
_SYNC_METHODS = ("tolist", "numpy", "cpu")
_MASK_HEAD = "turbo::mask_head"


def _inside(event, name: str) -> bool:
    e = event.cpu_parent
    while e is not None:
        if e.name == name:
            return True
        e = e.cpu_parent
    return False


@contextlib.contextmanager
def count_host_syncs(heads) -> Iterator[List[str]]:
    """Collects the host-sync calls made while the context is open (operator or
    ``Tensor.<method>`` names, filled when the context closes), leaving out those made inside
    the mask head (``heads.predict_masks``: Detectron2's pooler groups boxes by FPN level
    with ``nonzero``). Works on CPU too: it records the calls that would make a CUDA host
    wait.

    Not thread-safe: it patches ``torch.Tensor.tolist``/``numpy``/``cpu`` while open. The
    profiler sees the operators; the patched methods see host reads of CPU tensors, which
    call no operator.
    """
    found: List[str] = []
    depth = [0]
    predict_masks = heads.predict_masks

    def mask_head(*args, **kwargs):
        depth[0] += 1
        try:
            with record_function(_MASK_HEAD):
                return predict_masks(*args, **kwargs)
        finally:
            depth[0] -= 1

    def spy(name, method):
        def wrapper(self, *args, **kwargs):
            if depth[0] == 0:
                found.append(f"Tensor.{name}")
            return method(self, *args, **kwargs)

        return wrapper

    methods = {name: getattr(torch.Tensor, name) for name in _SYNC_METHODS}
    heads.predict_masks = mask_head
    try:
        for name, method in methods.items():
            setattr(torch.Tensor, name, spy(name, method))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            yield found
    finally:
        for name, method in methods.items():
            setattr(torch.Tensor, name, method)
        del heads.predict_masks  # back to the class's method
    found.extend(e.name for e in prof.events() if e.name in SYNC_OPS and not _inside(e, _MASK_HEAD))
