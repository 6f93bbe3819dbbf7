"""COCO metrics beyond the headline AP, on the predictions ``evaluate_variants`` keeps:
precision and recall of the detections a user keeps above a fixed score, and AP on a subset of
the images (e.g. images by their number of objects).

Both run pycocotools' own matching (``COCOeval.evaluate``: greedy by score, crowd and area
rules), so a true positive here is one COCO AP counts as such.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "load_coco_gt",
    "precision_recall",
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
    results = [r for r in results if img_ids is None or r["image_id"] in set(img_ids)]
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
    ev = _coco_eval(gt, results, iou_type, img_ids)
    if ev is None:
        return {t: (100.0, 0.0) for t in thresholds}
    ev.params.iouThrs = np.array([iou])
    ev.params.maxDets = [max_dets]
    ev.params.areaRng = [ev.params.areaRng[0]]
    ev.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    scores, matched, n_gt = [], [], 0
    for e in ev.evalImgs:
        if e is None:
            continue
        keep = ~np.asarray(e["dtIgnore"][0], dtype=bool)
        scores.append(np.asarray(e["dtScores"])[keep])
        matched.append(np.asarray(e["dtMatches"][0])[keep] > 0)
        n_gt += int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
    scores = np.concatenate(scores) if scores else np.zeros(0)
    matched = np.concatenate(matched) if matched else np.zeros(0, dtype=bool)
    out = {}
    for t in thresholds:
        kept = scores >= t
        tp = int((matched & kept).sum())
        precision = 100.0 * tp / int(kept.sum()) if kept.any() else 100.0
        out[t] = (precision, 100.0 * tp / max(n_gt, 1))
    return out


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
) -> None:
    """For each variant of ``results`` (from ``evaluate_variants(..., keep_predictions=True)``
    on the images ``img_ids`` of the registered dataset ``dataset_name``): replace its
    "predictions" by "score_pr", {task: :func:`precision_recall` at ``thresholds``}."""
    from detectron2.data import MetadataCatalog

    gt = load_coco_gt(MetadataCatalog.get(dataset_name).json_file)
    for res in results.values():
        preds = res.pop("predictions")
        res["score_pr"] = {
            task: precision_recall(gt, preds, task, thresholds, img_ids=img_ids) for task in tasks
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
