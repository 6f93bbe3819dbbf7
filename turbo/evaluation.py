"""The evaluators of a dataset, chosen by its ``evaluator_type`` metadata as Detectron2's
``tools/train_net.py`` chooses them (that choice lives in Detectron2's tools, not in its
package, so the entry points here cannot import it)."""

from __future__ import annotations

import os
from typing import List, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
    SemSegEvaluator,
)

__all__ = ["EVALUATOR_TYPES", "build_evaluator"]

# evaluator_type -> the evaluators it gets, in order
EVALUATOR_TYPES = {
    "coco": ("coco",),
    "sem_seg": ("sem_seg",),
    "coco_panoptic_seg": ("sem_seg", "coco", "panoptic"),
    "cityscapes_instance": ("cityscapes_instance",),
    "cityscapes_sem_seg": ("cityscapes_sem_seg",),
    "pascal_voc": ("pascal_voc",),
    "lvis": ("lvis",),
}


def build_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """The evaluator(s) of ``dataset_name`` by its ``evaluator_type``: COCO instances (box,
    and mask when the model has masks), LVIS (federated AP), Cityscapes instances or
    semantic segmentation, semantic segmentation, panoptic segmentation (PQ, plus semantic
    and instance metrics), Pascal VOC; several are combined with ``DatasetEvaluators``.
    Results go to ``output_folder`` (default ``OUTPUT_DIR/inference/<dataset>``).

    Raises ValueError naming the dataset when it has no ``evaluator_type`` or one with no
    evaluator here.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind not in EVALUATOR_TYPES:
        raise ValueError(
            f"dataset {dataset_name!r} has evaluator_type {kind!r}; turbo evaluates "
            f"{', '.join(sorted(EVALUATOR_TYPES))} (set MetadataCatalog.get(name)."
            "evaluator_type when registering it)"
        )
    evaluators: List[DatasetEvaluator] = []
    for name in EVALUATOR_TYPES[kind]:
        if name == "coco":
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
        elif name == "sem_seg":
            evaluators.append(SemSegEvaluator(dataset_name, output_dir=output_folder))
        elif name == "panoptic":
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        elif name == "cityscapes_instance":
            evaluators.append(CityscapesInstanceEvaluator(dataset_name))
        elif name == "cityscapes_sem_seg":
            evaluators.append(CityscapesSemSegEvaluator(dataset_name))
        elif name == "pascal_voc":
            evaluators.append(PascalVOCDetectionEvaluator(dataset_name))
        else:
            evaluators.append(LVISEvaluator(dataset_name, output_dir=output_folder))
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
