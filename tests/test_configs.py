"""Every shipped config loads with only the installed detectron2 package (no source checkout)
and builds its model with the turbo heads; the shipped checkpoints load through Detectron2's
own checkpointer and predict sensibly."""

import glob
import os

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import PanopticFPN, build_model
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from turbo import TurboCascadeROIHeads, TurboROIHeads
from turbo.benchmark.reference_models import REFERENCE_MODELS, REPO_ROOT
from turbo.build import get_turbo_cfg
from turbo.datasets import register_synthetic_datasets

from helpers import CONFIGS, assert_valid_roi_outputs

ALL = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))


def _cfg(path):
    cfg = get_turbo_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.parametrize("path", ALL, ids=[os.path.relpath(p, CONFIGS) for p in ALL])
def test_config_builds(path):
    cfg = _cfg(path)
    model = build_model(cfg)
    heads = TurboCascadeROIHeads if "Cascade" in cfg.MODEL.ROI_HEADS.NAME else TurboROIHeads
    assert type(model.roi_heads) is heads
    if "COCO" in path:
        assert cfg.MODEL.WEIGHTS.startswith("detectron2://") and cfg.MODEL.RESNETS.DEPTH == 50
        # COCO's 80 classes; its keypoints are annotated on one, the person
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == (1 if cfg.MODEL.KEYPOINT_ON else 80)


def test_shipped_checkpoints_fit_the_size_budget():
    """All shipped checkpoints together stay within 72 MB, so a clone stays small (64 MB held
    the six Mask R-CNNs and cascades; the Panoptic FPN, a Mask R-CNN with a semantic head,
    does not fit beside them in it)."""
    shipped = glob.glob(os.path.join(REPO_ROOT, "checkpoints", "*.pth"))
    assert {os.path.join(REPO_ROOT, w) for _, _, w in REFERENCE_MODELS.values()} == set(shipped)
    total = sum(os.path.getsize(p) for p in shipped)
    assert total <= 72 * 10**6, f"shipped checkpoints take {total / 1e6:.1f} MB, over 72 MB"


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_shipped_checkpoint_predicts(name):
    _, config, weights = REFERENCE_MODELS[name]
    path = os.path.join(REPO_ROOT, weights)
    assert os.path.isfile(path), f"{path} is missing: the reference checkpoints ship in git"
    assert os.path.getsize(path) < 20 * 2**20
    cfg = _cfg(os.path.join(REPO_ROOT, config))
    cfg.MODEL.WEIGHTS = path
    predictor = DefaultPredictor(cfg)  # Detectron2's own loading path
    # the checkpoint holds exactly the model's weights
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    assert set(state) == set(build_model(cfg).state_dict())
    register_synthetic_datasets()
    d = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]
    image = read_image(d["file_name"], format="BGR")
    # Detectron2's output contract, with the package defaults: the heads' masks are
    # probabilities in their boxes and scores lie in [0, 1]
    h, w = image.shape[:2]
    resized = predictor.aug.get_transform(image).apply_image(image)
    x = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
    with torch.no_grad():
        raw = predictor.model.inference(
            [{"image": x, "height": h, "width": w}], do_postprocess=False
        )
    if isinstance(predictor.model, PanopticFPN):  # (instances, semantic scores)
        raw = raw[0]
    assert len(raw[0]) > 0
    assert_valid_roi_outputs(raw[0], probabilities=True)
    # a trained model finds objects of the validation images: of the first five images'
    # objects, more than half on the shapes and more than a third on the harder scenes have a
    # detection above score 0.3 at IoU 0.5 (an untrained model finds none)
    found = []
    for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:5]:
        inst = predictor(read_image(d["file_name"], format="BGR"))["instances"]
        inst = inst[inst.scores > 0.3]
        gt = Boxes(
            torch.tensor(
                [
                    BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                    for a in d["annotations"]
                ],
                dtype=torch.float32,
            )
        )
        found.append(pairwise_iou(gt, inst.pred_boxes).max(dim=1).values > 0.5)
    recall = torch.cat(found).float().mean()
    assert recall > (1 / 3 if name.startswith("scenes") else 0.5), recall


PUBLISHED_FILES = sorted(glob.glob(os.path.join(CONFIGS, "**", "*_published.yaml"), recursive=True))


@pytest.mark.parametrize(
    "path", PUBLISHED_FILES, ids=[os.path.basename(p) for p in PUBLISHED_FILES]
)
def test_published_configs_are_the_published_recipe(path):
    """Each *_published.yaml gives exactly turbo.benchmark.variants.PUBLISHED, the head's own
    recipe for the thresholds, whatever its base config (the default or a tuned one) sets."""
    from turbo.benchmark.variants import PUBLISHED

    model = build_model(_cfg(path))
    assert model.roi_heads.turbo == PUBLISHED.resolved(type(model.roi_heads).recipe())
    assert os.path.isfile(path.replace("_published.yaml", ".yaml"))
