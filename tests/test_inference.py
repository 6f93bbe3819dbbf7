"""turbo.inference.turbo_cycles as a function, against references written out here: which rows
the rank gate selects, mask fusion, resampling, Maskness source, agreement rescoring, mask
edges and host syncs. The mask head is a synthetic, deterministic function of the boxes."""

import dataclasses

import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou

from turbo import TurboParams
from turbo.config import MASK_RCNN_RECIPE, PUBLISHED
from turbo.inference import Detections, descending_order, turbo_cycles
from turbo.ops import edge_normalized, mask_boxes, maskness, resample_masks
from turbo.testing import count_host_syncs

M = 28


class BlobHead:
    """A mask head whose mask of a box is a blob at a fixed place of the image: the same
    object seen through different boxes, as a trained mask head sees it. Counts calls."""

    def __init__(self, centres):
        self.centres = centres  # (N, 2) image point of each row's object
        self.calls = []

    def __call__(self, boxes, classes, counts):
        self.calls.append((len(boxes), list(counts)))
        t = (torch.arange(M, dtype=torch.float32) + 0.5) / M
        xs = boxes[:, None, 0] + t[None] * (boxes[:, None, 2] - boxes[:, None, 0])  # (n, M)
        ys = boxes[:, None, 1] + t[None] * (boxes[:, None, 3] - boxes[:, None, 1])
        # the row's object: find its centre from the class id (rows keep their class)
        c = self.centres[classes]
        d2 = (xs[:, None, :] - c[:, None, None, 0]) ** 2 + (
            ys[:, :, None] - c[:, None, None, 1]
        ) ** 2
        return torch.sigmoid((144.0 - d2) / 30.0)


def _detections(n_per_image=(5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(n_per_image)
    centres = torch.rand(n, 2, generator=g) * 60 + 20
    wh = torch.rand(n, 2, generator=g) * 20 + 20
    jitter = torch.randn(n, 2, generator=g) * 4
    boxes = torch.cat([centres + jitter - wh / 2, centres + jitter + wh / 2], dim=1)
    scores = torch.rand(n, generator=g)
    sizes = [(100, 100)] * len(n_per_image)
    start, inst = 0, []
    for k, size in zip(n_per_image, sizes):
        sl = slice(start, start + k)
        inst.append(
            Instances(
                size,
                pred_boxes=Boxes(boxes[sl]),
                scores=scores[sl],
                pred_classes=torch.arange(start, start + k),
            )
        )
        start += k
    dets = Detections.from_instances(inst)
    return dets, BlobHead(centres)


def _params(**changes):
    return PUBLISHED.resolved(MASK_RCNN_RECIPE).replace(**changes)


def _first(dets, head):
    return head(dets.boxes, dets.classes, list(dets.counts))


def test_published_cycle_is_its_definition():
    dets, head = _detections()
    p = _params()
    first = _first(dets, head)
    out = turbo_cycles(p, dets, first, head)
    refined, found = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    assert found.all()
    torch.testing.assert_close(out.boxes, refined)
    torch.testing.assert_close(out.masks, head(refined, dets.classes, list(dets.counts)))
    m = maskness(first, p.maskness_thresh)
    torch.testing.assert_close(
        out.scores, dets.scores * (1 - p.maskness_weight + p.maskness_weight * m)
    )
    # refinement moves the jittered boxes towards the objects
    assert (matched_pairwise_iou(Boxes(out.boxes), Boxes(dets.boxes)) < 0.99).any()


@pytest.mark.parametrize("f", [0.25, 0.5, 1.0])
def test_mask_fusion(f):
    dets, head = _detections()
    first = _first(dets, head)
    p = _params(mask_fusion=f)
    out = turbo_cycles(p, dets, first, head)
    refined, _ = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    new = head(refined, dets.classes, list(dets.counts))
    want = f * resample_masks(first, dets.boxes, refined) + (1 - f) * new
    torch.testing.assert_close(out.masks, want)
    torch.testing.assert_close(out.boxes, refined)


@pytest.mark.parametrize("scale", [1.1, 1.5])
@pytest.mark.parametrize("changes", [{}, {"mask_fusion": 0.5, "repredict_topk": 3}])
def test_repredict_scale(scale, changes):
    dets, head = _detections()
    first = _first(dets, head)
    seen = []

    def recording_head(boxes, classes, counts):
        seen.append(boxes)
        return head(boxes, classes, counts)

    p = _params(repredict_scale=scale, **changes)
    out = turbo_cycles(p, dets, first, recording_head)
    refined, _ = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    rows = torch.arange(len(refined))
    if p.repredict_topk:  # each image's best k, in order of score
        rows = torch.cat(
            [
                s.argsort(descending=True)[: p.repredict_topk] + start
                for s, start in zip(dets.scores.split(dets.counts), (0, dets.counts[0]))
            ]
        )
    # the head sees each selected refined box scaled about its centre, corner by corner
    x0, y0, x1, y1 = refined[rows].unbind(1)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, scale * (x1 - x0) / 2, scale * (y1 - y0) / 2
    wide = torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=1)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], wide)
    new = resample_masks(head(wide, dets.classes[rows], [len(rows)]), wide, refined[rows])
    earlier = resample_masks(first, dets.boxes, refined)
    f = p.mask_fusion
    want = earlier.clone()
    want[rows] = f * earlier[rows] + (1 - f) * new
    torch.testing.assert_close(out.masks, want)
    torch.testing.assert_close(out.boxes, refined)
    # the object is seen through a wider box, yet the mask is still the mask in the refined box
    direct = head(refined[rows], dets.classes[rows], [len(rows)])
    assert (new - direct).abs().mean() < 0.02


@pytest.mark.parametrize("k", [1, 2, 4, 10])
def test_repredict_topk_selects_each_images_best(k):
    dets, head = _detections((5, 3))
    first = _first(dets, head)
    p = _params(repredict_topk=k)
    out = turbo_cycles(p, dets, first, head)
    refined, _ = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    # reference: rank within each image by score
    top = torch.zeros(len(dets.scores), dtype=torch.bool)
    start = 0
    for n in dets.counts:
        s = dets.scores[start : start + n]
        top[start + torch.argsort(s, descending=True)[:k]] = True
        start += n
    assert head.calls[-1] == (int(top.sum()), [min(k, n) for n in dets.counts])
    torch.testing.assert_close(
        out.masks[top], head(refined[top], dets.classes[top], [min(k, n) for n in dets.counts])
    )
    # every row takes its refined box; the masks not re-predicted are resampled into it
    torch.testing.assert_close(out.boxes, refined)
    torch.testing.assert_close(out.masks[~top], resample_masks(first, dets.boxes, refined)[~top])
    # scores are rescored whatever was re-predicted
    torch.testing.assert_close(out.scores, turbo_cycles(_params(), dets, first, head).scores)


def test_unresolved_parameters_are_refused():
    dets, head = _detections()
    with pytest.raises(ValueError, match="resolved parameters"):
        turbo_cycles(TurboParams(), dets, _first(dets, head), head)


class _Heads:
    """count_host_syncs wraps ``predict_masks`` of a heads object."""

    def __init__(self, head):
        self.predict_masks = head


@pytest.mark.parametrize(
    "changes,syncs",
    [
        ({}, False),
        ({"repredict_topk": 3, "mask_fusion": 0.5}, False),
        ({"repredict_topk": 3, "rescore_agreement": True, "maskness_source": "both"}, False),
        ({"repredict_topk": 3, "mask_edge": "half_interior"}, False),
    ],
)
def test_host_syncs(changes, syncs):
    """Every mask re-predicted, or the top k only, with any rescoring and mask edge: no host
    sync."""
    dets, head = _detections()
    first = _first(dets, head)
    heads = _Heads(head)
    with count_host_syncs(heads) as found:
        turbo_cycles(_params(num_iters=2, **changes), dets, first, heads.predict_masks)
    assert bool(found) == syncs, found


@pytest.mark.parametrize("topk", [0, 3])
def test_rescore_agreement(topk):
    """Each re-predicted row's score is rescored by the soft IoU of its new mask with the
    earlier one resampled into the refined box; rows not re-predicted keep their score."""
    dets, head = _detections((5, 3))
    first = _first(dets, head)
    p = _params(rescore_agreement=True, repredict_topk=topk, mask_fusion=0.5)
    out = turbo_cycles(p, dets, first, head)
    ref = turbo_cycles(p.replace(rescore_agreement=False), dets, first, head)
    refined, _ = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    earlier = resample_masks(first, dets.boxes, refined)
    new = head(refined, dets.classes, list(dets.counts))
    agree = torch.minimum(earlier, new).flatten(1).sum(1) / torch.maximum(earlier, new).flatten(
        1
    ).sum(1)
    selected = torch.ones_like(agree, dtype=torch.bool)
    if topk:
        selected[:] = False
        start = 0
        for n in dets.counts:
            order = torch.argsort(dets.scores[start : start + n], descending=True)[:topk]
            selected[start + order] = True
            start += n
    w = p.maskness_weight
    want = torch.where(selected, ref.scores * ((1 - w) + w * agree), ref.scores)
    torch.testing.assert_close(out.scores, want)
    torch.testing.assert_close(out.masks, ref.masks)
    assert (agree < 1).all() and (agree > 0.3).all()


def test_maskness_source_both():
    dets, head = _detections()
    first = _first(dets, head)
    p = _params(maskness_source="both", mask_fusion=0.5)
    out = turbo_cycles(p, dets, first, head)
    w = p.maskness_weight
    m1, m2 = maskness(first, p.maskness_thresh), maskness(out.masks, p.maskness_thresh)
    torch.testing.assert_close(out.scores, dets.scores * ((1 - w) + w * m1) * ((1 - w) + w * m2))
    torch.testing.assert_close(out.maskness, m2)


@pytest.mark.parametrize("changes", [{}, {"repredict_topk": 3}])
def test_mask_edge_normalizes_the_output_masks(changes):
    """The output masks divided by their interior levels (those reaching box_thresh); boxes,
    scores and Maskness as with edges at probability 0.5."""
    dets, head = _detections()
    dets = dataclasses.replace(dets, scores=dets.scores.index_fill(0, torch.tensor([1]), 0.0))
    first = _first(dets, head)
    first[0] *= 0.6  # a first mask below peak 1
    first[1] *= 0.1  # without foreground: not re-predicted under top-3, it stays as it is
    p = _params(maskness_source="both", mask_fusion=0.5, **changes)
    ref = turbo_cycles(p.replace(mask_edge="probability"), dets, first, head)
    out = turbo_cycles(p.replace(mask_edge="half_interior"), dets, first, head)
    torch.testing.assert_close(out.masks, edge_normalized(ref.masks, p.box_thresh))
    for name in ("boxes", "scores", "maskness", "found"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name))
    peaks = out.masks.flatten(1).amax(1)
    reached = ref.masks.flatten(1).amax(1) >= p.box_thresh
    assert reached.all() == (not changes) and torch.equal(out.masks[~reached], ref.masks[~reached])
    # the plateau's mean at 1: its largest cell above
    assert (peaks[reached] >= 1).all() and (peaks[reached] > 1).any()


def test_descending_order_is_a_stable_sort_also_under_tracing():
    """Ties keep the lower index first, eagerly and in a trace replayed on other inputs (where
    no stable sort exists in ONNX)."""
    g = torch.Generator().manual_seed(3)

    def stable(x):
        return torch.sort(x, descending=True, stable=True).indices

    traced = torch.jit.trace(descending_order, (torch.rand(9, generator=g),), check_trace=False)
    for n in (0, 1, 40):
        scores = torch.randint(0, 4, (n,), generator=g).float() / 4  # many ties
        assert torch.equal(descending_order(scores), stable(scores))
        assert torch.equal(traced(scores), stable(scores))
