"""The turbo stages as the heads run them (``TurboMixin.refine``), against references written
out here: which rows the rank gate selects, resampling, Maskness source, mask edges and host
syncs. The mask head is a synthetic, deterministic function of the boxes, standing in for the
heads' ``predict_masks``."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou

from turbo.benchmark.host_syncs import count_host_syncs
from turbo.benchmark.variants import PUBLISHED
from turbo.config import MASK_RCNN_RECIPE
from turbo.inference import Detections, descending_order
from turbo.ops import edge_normalized, mask_boxes, maskness, resample_masks

from helpers import build, tiny_cfg

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
    return inst, Detections.from_instances(inst), BlobHead(centres)


def _params(**changes):
    return PUBLISHED.resolved(MASK_RCNN_RECIPE).replace(**changes)


def _first(dets, head):
    return head(dets.boxes, dets.classes, list(dets.counts))


@pytest.fixture(scope="module")
def heads():
    """Turbo heads of a small Mask R-CNN that return every detection (score threshold -1)."""
    h = build(tiny_cfg()).roi_heads
    h.box_predictor.test_score_thresh = -1.0
    return h


def _run(heads, params, inst, head, first=None):
    """``heads.refine`` on the detections ``inst`` under ``params``, its mask head ``head``
    (the first prediction replaced by ``first`` when given). The outputs (every detection,
    sorted by score within each image) are put back in input row order (row i has class i),
    as a namespace with boxes, masks, scores, maskness."""
    predict = heads.predict_masks if "predict_masks" in vars(heads) else None
    calls = [0]

    def predict_masks(features, boxes, classes, counts, image_sizes):
        calls[0] += 1
        if calls[0] == 1 and first is not None:
            return first
        return head(boxes, classes, counts)

    heads.predict_masks = predict_masks if predict is None else predict
    try:
        with heads.turbo_params(params):
            out = heads.refine({}, [x[:] for x in inst])
    finally:
        if predict is None:
            del heads.predict_masks
    classes = torch.cat([o.pred_classes for o in out])
    order = torch.argsort(classes)
    assert torch.equal(classes[order], torch.arange(len(classes)))
    return SimpleNamespace(
        boxes=torch.cat([o.pred_boxes.tensor for o in out])[order],
        masks=torch.cat([o.pred_masks[:, 0] for o in out])[order],
        scores=torch.cat([o.scores for o in out])[order],
        maskness=torch.cat([o.maskness for o in out])[order],
        per_image=out,
    )


def test_published_cycle_is_its_definition(heads):
    inst, dets, head = _detections()
    p = _params()
    first = _first(dets, head)
    out = _run(heads, p, inst, head)
    refined, found = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    assert found.all()
    torch.testing.assert_close(out.boxes, refined)
    torch.testing.assert_close(out.masks, head(refined, dets.classes, list(dets.counts)))
    m = maskness(first, p.maskness_thresh)
    torch.testing.assert_close(
        out.scores, dets.scores * (1 - p.maskness_weight + p.maskness_weight * m)
    )
    torch.testing.assert_close(out.maskness, m)
    # sorted by score within each image
    for o in out.per_image:
        assert torch.equal(o.scores, o.scores.sort(descending=True).values)
    # refinement moves the jittered boxes towards the objects
    assert (matched_pairwise_iou(Boxes(out.boxes), Boxes(dets.boxes)) < 0.99).any()


def _top(dets, k):
    """(N,) bool: each image's k best rows by score."""
    top = torch.zeros(len(dets.scores), dtype=torch.bool)
    start = 0
    for n in dets.counts:
        s = dets.scores[start : start + n]
        top[start + torch.argsort(s, descending=True)[:k]] = True
        start += n
    return top


@pytest.mark.parametrize("k", [1, 2, 4, 10])
def test_repredict_topk_selects_each_images_best(heads, k):
    inst, dets, head = _detections((5, 3))
    first = _first(dets, head)
    p = _params(repredict_topk=k)
    out = _run(heads, p, inst, head)
    refined, _ = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    top = _top(dets, k)
    assert head.calls[-1] == (int(top.sum()), [min(k, n) for n in dets.counts])
    torch.testing.assert_close(
        out.masks[top], head(refined[top], dets.classes[top], [min(k, n) for n in dets.counts])
    )
    # every row takes its refined box; the masks not re-predicted are resampled into it
    torch.testing.assert_close(out.boxes, refined)
    torch.testing.assert_close(out.masks[~top], resample_masks(first, dets.boxes, refined)[~top])
    # scores are rescored whatever was re-predicted
    torch.testing.assert_close(out.scores, _run(heads, _params(), inst, head).scores)


@pytest.mark.parametrize("k", [0, 2, 4])
@pytest.mark.parametrize("min_score", [0.4, 0.75, 1.0])
def test_repredict_min_score_gates_the_ranked_rows(heads, k, min_score):
    """The score gate re-predicts each image's top k (every row for k = 0) whose detection
    score is at least ``repredict_min_score``, an image with none too; the others take their
    refined box with their mask resampled into it, and every score is rescored."""
    inst, dets, head = _detections((6, 4, 3), seed=3)
    first = _first(dets, head)
    p = _params(repredict_topk=k, repredict_min_score=min_score)
    out = _run(heads, p, inst, head)
    refined, _ = mask_boxes(first, dets.boxes, dets.image_hw, p.box_thresh)
    top = (_top(dets, k) if k else torch.ones(len(dets.scores), dtype=torch.bool)) & (
        dets.scores >= min_score
    )
    counts = [int(x.sum()) for x in top.split(list(dets.counts))]
    assert 0 in counts or min_score < 1.0
    assert head.calls[-1] == (int(top.sum()), counts)
    # the re-predicted rows go to the mask head grouped by image
    torch.testing.assert_close(out.masks[top], head(refined[top], dets.classes[top], counts))
    torch.testing.assert_close(out.boxes, refined)
    torch.testing.assert_close(out.masks[~top], resample_masks(first, dets.boxes, refined)[~top])
    torch.testing.assert_close(out.scores, _run(heads, _params(), inst, head).scores)


def test_repredict_min_score_zero_is_the_rank_gate(heads):
    inst, dets, head = _detections((5, 3))
    a = _run(heads, _params(repredict_topk=2), inst, head)
    b = _run(heads, _params(repredict_topk=2, repredict_min_score=0.0), inst, head)
    for x, y in zip(vars(a).values(), vars(b).values()):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)


@pytest.mark.parametrize("k", [0, 3])
def test_two_cycles(heads, k):
    """The second cycle refines from the first cycle's masks, in the first cycle's boxes; the
    rank gate re-predicts the same rows in both (the detection scores' ranks)."""
    inst, dets, head = _detections((5, 3))
    first = _first(dets, head)
    p = _params(num_iters=2, repredict_topk=k)
    out = _run(heads, p, inst, head)
    top = _top(dets, k) if k else torch.ones(len(dets.scores), dtype=torch.bool)
    boxes, masks = dets.boxes, first
    for _ in range(2):
        refined, _ = mask_boxes(masks, boxes, dets.image_hw, p.box_thresh)
        new = resample_masks(masks, boxes, refined)
        new[top] = head(refined[top], dets.classes[top], [int(top.sum())])
        boxes, masks = refined, new
    torch.testing.assert_close(out.boxes, boxes)
    torch.testing.assert_close(out.masks, masks)


def test_unresolved_parameters_are_refused():
    from turbo import TurboParams
    from turbo.inference import refine_boxes

    inst, dets, head = _detections()
    with pytest.raises(TypeError):
        refine_boxes(TurboParams(), _first(dets, head), dets.boxes, dets.image_hw)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"repredict_topk": 3},
        {"repredict_topk": 3, "maskness_source": "both"},
        {"repredict_topk": 3, "mask_edge": "half_interior"},
    ],
)
def test_host_syncs(heads, changes):
    """Every mask re-predicted, or the top k only, with any rescoring and mask edge: no host
    sync in the cycles and rescoring, one per image in the output step (which detections
    score above the threshold)."""
    inst, dets, head = _detections()

    def predict_masks(features, boxes, classes, counts, image_sizes):
        return head(boxes, classes, counts)

    heads.predict_masks = predict_masks
    try:
        with heads.turbo_params(_params(num_iters=2, **changes)), count_host_syncs(heads) as found:
            heads.refine({}, inst)
    finally:
        del heads.predict_masks
    assert len(found) == len(inst) and all("nonzero" in f for f in found), found


def test_maskness_source_both(heads):
    inst, dets, head = _detections()
    first = _first(dets, head)
    p = _params(maskness_source="both")
    out = _run(heads, p, inst, head)
    w = p.maskness_weight
    m1, m2 = maskness(first, p.maskness_thresh), maskness(out.masks, p.maskness_thresh)
    torch.testing.assert_close(out.scores, dets.scores * ((1 - w) + w * m1) * ((1 - w) + w * m2))
    torch.testing.assert_close(out.maskness, m2)


@pytest.mark.parametrize("changes", [{}, {"repredict_topk": 3}])
def test_mask_edge_normalizes_the_output_masks(heads, changes):
    """The output masks divided by their interior levels (those reaching box_thresh); boxes,
    scores and Maskness as with edges at probability 0.5."""
    inst, dets, head = _detections()
    inst[0].scores[1] = 0.0
    dets = dataclasses.replace(dets, scores=dets.scores.index_fill(0, torch.tensor([1]), 0.0))
    first = _first(dets, head)
    first[0] *= 0.6  # a first mask below peak 1
    first[1] *= 0.1  # without foreground: not re-predicted under top-3, it stays as it is
    p = _params(maskness_source="both", **changes)
    ref = _run(heads, p.replace(mask_edge="probability"), inst, head, first)
    out = _run(heads, p.replace(mask_edge="half_interior"), inst, head, first)
    torch.testing.assert_close(out.masks, edge_normalized(ref.masks, p.box_thresh))
    for name in ("boxes", "scores", "maskness"):
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
