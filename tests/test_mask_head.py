"""turbo.mask_head: the mask head on Turbo's path computes upstream's masks (channels-last, the
selected class only), and the heads use it exactly where it computes what the head computes."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.structures import Boxes, Instances

from turbo.heads import TurboMixin
from turbo.mask_head import PRODUCT_ROWS, selected_mask_logits, supports_selected_masks

from helpers import build, tiny_cfg


def _head(num_classes: int, agnostic: bool = False, norm: str = "", conv_dim: int = 16):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = agnostic
    cfg.MODEL.ROI_MASK_HEAD.NORM = norm
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = conv_dim
    torch.manual_seed(0)
    head = MaskRCNNConvUpsampleHead(cfg, ShapeSpec(channels=8, width=14, height=14)).eval()
    with torch.no_grad():  # Detectron2 initialises the predictor near zero: make it matter
        head.predictor.weight.normal_(0, 0.5)
        head.predictor.bias.normal_(0, 0.5)
    return head


@pytest.mark.parametrize(
    "num_classes, agnostic, norm",
    [(6, False, ""), (80, False, ""), (6, True, ""), (6, False, "GN"), (1, False, "")],
)
def test_selected_logits_are_upstreams(num_classes, agnostic, norm):
    head = _head(num_classes, agnostic, norm)
    x = torch.randn(23, 8, 14, 14)
    classes = torch.randint(num_classes, (23,))
    with torch.no_grad():
        full = head.layers(x)
        expected = full[:, 0] if agnostic else full[torch.arange(23), classes]
        got = selected_mask_logits(head, x, classes)
    assert got.shape == (23, 28, 28)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # a real difference shows: another class's masks are not these
    if not agnostic and num_classes > 1:
        other = full[torch.arange(23), (classes + 1) % num_classes]
        assert (other - got).abs().max() > 1e-2


def test_autograd_through_the_in_place_relu_and_the_row_steps():
    """With autograd on (more rows than one product step), the logits and their gradient are
    upstream's, and the input is left as it was."""
    head = _head(6)
    x = torch.randn(PRODUCT_ROWS * 2 + 3, 8, 14, 14, requires_grad=True)
    before = x.detach().clone()
    classes = torch.randint(6, (x.shape[0],))
    got = selected_mask_logits(head, x, classes)
    (got * torch.linspace(-1, 1, 28)).sum().backward()
    grad, x.grad = x.grad, None
    expected = head.layers(x)[torch.arange(x.shape[0]), classes]
    (expected * torch.linspace(-1, 1, 28)).sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, x.grad, rtol=1e-4, atol=1e-5)
    assert torch.equal(x.detach(), before)


def test_no_rows_and_autocast():
    head = _head(6)
    with torch.no_grad():
        assert selected_mask_logits(
            head, torch.zeros(0, 8, 14, 14), torch.zeros(0).long()
        ).shape == (
            0,
            28,
            28,
        )
        x, classes = torch.randn(5, 8, 14, 14), torch.tensor([0, 5, 2, 2, 1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = selected_mask_logits(head, x, classes)
            expected = head.layers(x)[torch.arange(5), classes]
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.05, atol=0.1)


class _OwnMaskHead(MaskRCNNConvUpsampleHead):
    """A user's subclass: it may change what the head computes."""


@ROI_HEADS_REGISTRY.register()
class _TurboOwnForwardMaskHeads(TurboMixin, StandardROIHeads):
    """Heads that pool their mask features their own way."""

    def _forward_mask(self, features, instances):
        return super()._forward_mask(features, instances)


def test_supported_heads_only():
    assert supports_selected_masks(_head(6))
    assert not supports_selected_masks(_OwnMaskHead(get_cfg(), ShapeSpec(channels=8, width=14)))
    assert build(tiny_cfg()).roi_heads._selected_masks_apply()
    assert build(tiny_cfg("TurboCascadeROIHeads")).roi_heads._selected_masks_apply()
    assert not build(tiny_cfg("_TurboOwnForwardMaskHeads")).roi_heads._selected_masks_apply()


@pytest.mark.parametrize("head", ["TurboROIHeads", "TurboCascadeROIHeads"])
def test_heads_masks_equal_the_parents_mask_head(head, images):
    """The heads' masks on given boxes are those of the parent's ``_forward_mask`` (upstream's
    mask head and ``mask_rcnn_inference``), on two images at once."""
    m = build(tiny_cfg(head))
    rh = m.roi_heads
    with torch.no_grad():
        ims = m.preprocess_image(images[:2])
        features = m.backbone(ims.tensor)
        boxes = [
            torch.tensor([[4.0, 5.0, 40.0, 30.0], [0.0, 0.0, 64.0, 64.0], [10, 12, 11, 13]]),
            torch.tensor([[20.0, 8.0, 50.0, 60.0]]),
        ]
        classes = [torch.tensor([0, 2, 1]), torch.tensor([1])]
        inst = [
            Instances(s, pred_boxes=Boxes(b), pred_classes=c)
            for s, b, c in zip(ims.image_sizes, boxes, classes)
        ]
        upstream = torch.cat(
            [x.pred_masks[:, 0] for x in StandardROIHeads._forward_mask(rh, features, inst)]
        )
        got = rh.predict_masks(
            features, torch.cat(boxes), torch.cat(classes), [3, 1], ims.image_sizes
        )
    torch.testing.assert_close(got, upstream, rtol=1e-4, atol=1e-4)
