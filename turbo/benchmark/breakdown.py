"""COCO metrics beyond the headline AP, on the predictions ``evaluate_variants`` keeps:
precision and recall of the detections a user keeps above a fixed score, with the spread over
images of a difference between two variants, and AP on a subset of the images (e.g. images
by their number of objects).

Both run pycocotools' own matching (``COCOeval.evaluate``: greedy by score, crowd and area
rules), so a true positive here is one COCO AP counts as such.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "load_coco_gt",
    "score_counts",
    "precision_recall",
    "difference_spread",
    "BOOTSTRAP_RESAMPLES",
    "count_matched_thresholds",
    "add_precision_recall",
    "ap_on_images",
    "objects_per_image",
]


def load_coco_gt(json_file: str) -> COCO:
    """The ground truth of a COCO-format json file (pycocotools' prints silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def _coco_eval(
    gt: COCO, results: List[dict], iou_type: str, img_ids: Optional[Sequence[int]] = None
) -> Optional[COCOeval]:
    """``COCOeval`` of ``results`` (COCO-json detections) on ``gt``, evaluated per image; None
    when there is no detection. For "segm" the boxes are dropped, as Detectron2's
    ``COCOEvaluator`` does, so that areas are the masks' areas."""
    if img_ids is not None:
        wanted = set(img_ids)
        results = [r for r in results if r["image_id"] in wanted]
    if not results:
        return None
    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        return ev


def score_counts(
    gt: COCO,
    results: List[dict],
    iou_type: str,
    thresholds: Sequence[float],
    iou: float = 0.5,
    max_dets: int = 100,
    img_ids: Optional[Sequence[int]] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, what :func:`precision_recall` sums: (tp, kept, n_gt), tp and kept
    (n_images, n_thresholds) the true positives and the detections scoring at least each
    threshold, n_gt (n_images,) the objects a detection could match (crowds and ignored
    areas left out), one row per image of ``img_ids`` in ascending id order (default: every
    image of ``gt``). A true positive is one COCO matches to an object at IoU ``iou`` (all
    areas, at most ``max_dets`` per image, as COCO AP does)."""
    ids = sorted(gt.getImgIds() if img_ids is None else img_ids)
    row = {i: k for k, i in enumerate(ids)}
    tp = np.zeros((len(ids), len(thresholds)), dtype=np.int64)
    kept = np.zeros_like(tp)
    n_gt = np.zeros(len(ids), dtype=np.int64)
    ev = _coco_eval(gt, results, iou_type, ids)
    if ev is None:  # nothing detected: only the objects to count
        for a in gt.loadAnns(gt.getAnnIds(imgIds=ids, iscrowd=False)):
            n_gt[row[a["image_id"]]] += 1
        return tp, kept, n_gt
    ev.params.iouThrs = np.array([iou])
    ev.params.maxDets = [max_dets]
    ev.params.areaRng = [ev.params.areaRng[0]]
    ev.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    t = np.asarray(thresholds, dtype=np.float64)
    for e in ev.evalImgs:
        if e is None:
            continue
        k = row[e["image_id"]]
        keep = ~np.asarray(e["dtIgnore"][0], dtype=bool)
        above = np.asarray(e["dtScores"], dtype=np.float64)[keep][:, None] >= t
        matched = np.asarray(e["dtMatches"][0])[keep] > 0
        kept[k] += above.sum(0)
        tp[k] += (above & matched[:, None]).sum(0)
        n_gt[k] += int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
    return tp, kept, n_gt


def _precision_recall_of_sums(
    tp: np.ndarray, kept: np.ndarray, n_gt: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Precision and recall (%) of summed counts (..., n_thresholds) and (...,): precision 100
    where nothing is kept."""
    precision = np.where(kept > 0, 100.0 * tp / np.maximum(kept, 1), 100.0)
    recall = 100.0 * tp / np.maximum(n_gt, 1)[..., None]
    return precision, recall


def _by_threshold(
    thresholds: Sequence[float], precision: np.ndarray, recall: np.ndarray
) -> Dict[float, Tuple[float, float]]:
    """{threshold: (precision, recall)} of two (n_thresholds,) arrays, as Python floats."""
    return {t: (float(p), float(r)) for t, p, r in zip(thresholds, precision, recall)}


def _summed(
    thresholds: Sequence[float], counts: Tuple[np.ndarray, np.ndarray, np.ndarray]
) -> Dict[float, Tuple[float, float]]:
    """{threshold: (precision, recall)} over all the images of :func:`score_counts`."""
    tp, kept, n_gt = counts
    return _by_threshold(thresholds, *_precision_recall_of_sums(tp.sum(0), kept.sum(0), n_gt.sum()))


def precision_recall(
    gt: COCO,
    results: List[dict],
    iou_type: str,
    thresholds: Sequence[float],
    iou: float = 0.5,
    max_dets: int = 100,
    img_ids: Optional[Sequence[int]] = None,
) -> Dict[float, Tuple[float, float]]:
    """{score threshold: (precision, recall)} of the detections scoring at least each
    threshold, a detection being a true positive when COCO matches it to a ground-truth
    object at IoU ``iou`` (all areas, at most ``max_dets`` per image, as COCO AP does), on
    the images ``img_ids`` (default: every image of ``gt``). Precision is 100 where no
    detection passes; in percent, like COCO AP."""
    return _summed(
        thresholds, score_counts(gt, results, iou_type, thresholds, iou, max_dets, img_ids)
    )


# Resamples of the images behind a precision / recall difference's spread: enough that the
# spread's own error (about 1 / sqrt(2 * resamples) of it) is below 3 %.
BOOTSTRAP_RESAMPLES = 1000


def difference_spread(
    reference: Tuple[np.ndarray, np.ndarray, np.ndarray],
    other: Tuple[np.ndarray, np.ndarray, np.ndarray],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Standard deviations (n_thresholds,) of ``other``'s precision and recall minus
    ``reference``'s, in points, over the images: both :func:`score_counts` of the same
    images, resampled together (a paired bootstrap), so that what the two share, the
    images, cancels. A difference within about one such deviation of zero is what another
    set of images of the same kind could reverse."""
    if reference[0].shape != other[0].shape:
        raise ValueError(
            f"difference_spread needs counts of the same images and thresholds: shapes "
            f"{reference[0].shape} and {other[0].shape}"
        )
    n = reference[0].shape[0]
    if n == 0:
        return np.zeros(reference[0].shape[1]), np.zeros(reference[0].shape[1])
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    diffs = []
    for counts in (other, reference):
        tp, kept, n_gt = (weights @ c for c in counts)
        diffs.append(_precision_recall_of_sums(tp, kept, n_gt))
    (p1, r1), (p0, r0) = diffs
    return (p1 - p0).std(axis=0, ddof=1), (r1 - r0).std(axis=0, ddof=1)


def count_matched_thresholds(
    reference: Sequence[dict], results: Sequence[dict], thresholds: Sequence[float]
) -> Dict[float, float]:
    """{threshold t: score s_t}: the score at or above which ``results`` (COCO-json
    detections) keep as many detections as ``reference`` keeps at or above t: at least as
    many where scores tie, every detection (0) where ``results`` has fewer, none (+inf) where
    ``reference`` keeps none.

    :func:`precision_recall` of ``results`` at the s_t compares two rankings at equal
    counts: what a perfectly count-matched score map would give, whatever map ``results``
    carry, since a strictly increasing map changes the order of nothing. The part of a
    precision gap at t that remains at s_t is the ranking's, not the map's."""
    ref = np.asarray([r["score"] for r in reference], dtype=np.float64)
    got = np.sort(np.asarray([r["score"] for r in results], dtype=np.float64))[::-1]
    out = {}
    for t in thresholds:
        n = int((ref >= t).sum())
        if n == 0:
            out[t] = float("inf")
        else:
            out[t] = float(got[n - 1]) if n <= len(got) else 0.0
    return out


def add_precision_recall(
    results: Dict[str, dict],
    dataset_name: str,
    thresholds: Sequence[float],
    img_ids: Sequence[int],
    tasks: Sequence[str] = ("bbox", "segm"),
    reference: Optional[Mapping[str, str]] = None,
) -> None:
    """For each variant of ``results`` (from ``evaluate_variants(..., keep_predictions=True)``
    on the images ``img_ids`` of the registered dataset ``dataset_name``): replace its
    "predictions" by "score_pr", {task: :func:`precision_recall` at ``thresholds``}; and with
    ``reference`` ({variant: the variant it is compared with, e.g. its model's baseline}) add
    "score_pr_spread", {task: {threshold: standard deviations of the precision and recall
    differences}} (:func:`difference_spread`), to each variant that has another as its
    reference."""
    from detectron2.data import MetadataCatalog

    gt = load_coco_gt(MetadataCatalog.get(dataset_name).json_file)
    counts = {}
    for name, res in results.items():
        preds = res.pop("predictions")
        counts[name] = {
            task: score_counts(gt, preds, task, thresholds, img_ids=img_ids) for task in tasks
        }
    for name, res in results.items():
        res["score_pr"] = {task: _summed(thresholds, c) for task, c in counts[name].items()}
        ref = (reference or {}).get(name)
        if ref is not None and ref != name:
            res["score_pr_spread"] = {
                task: _by_threshold(thresholds, *difference_spread(counts[ref][task], c))
                for task, c in counts[name].items()
            }


def ap_on_images(gt: COCO, results: List[dict], iou_type: str, img_ids: Sequence[int]) -> float:
    """COCO AP (IoU 0.5:0.95, in percent) of ``results`` on the images ``img_ids`` alone."""
    ev = _coco_eval(gt, results, iou_type, img_ids)
    if ev is None:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return 100.0 * float(ev.stats[0])


def objects_per_image(gt: COCO) -> Dict[int, int]:
    """{image id: number of annotated objects (crowd regions excluded)}."""
    counts = {i: 0 for i in gt.getImgIds()}
    for a in gt.dataset["annotations"]:
        if not a.get("iscrowd", 0):
            counts[a["image_id"]] += 1
    return counts
