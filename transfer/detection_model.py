"""Faster R-CNN R50-C4 as the detectron2 VOC protocol builds it, from torchvision parts.

The paper's detection transfer (Table 6) is MoCo's detectron2 protocol (He et al., CVPR 2020, §4.2):
a Faster R-CNN with a ResNet-50 **C4** backbone (not FPN). :func:`build_model` rebuilds it with
torchvision's detection parts so that it runs where detectron2 is not installed:

* backbone (the "trunk", :class:`ResNetC4Trunk`): ``conv1`` .. ``layer3`` of our torchvision
  ResNet-50 (res2-res4), stride 16, 1024 channels; the RPN runs on it with anchors of sizes
  32..512 and aspect ratios 0.5/1/2 (15 per location);
* RoI head (:class:`Res5BoxHead`): ``MultiScaleRoIAlign(["0"], output_size=14,
  sampling_ratio=0)``, then ``layer4`` (res5, first block stride 2: 14x14 -> 7x7), then an extra
  BatchNorm over its 2048 channels (MoCo's ``Res5ROIHeadsExtraNorm``), global average pooling
  and a ``FastRCNNPredictor(2048, 21)`` (20 classes + background; initialised as detectron2's,
  normal std 0.01 for the classifier and 0.001 for the box regressor);
* pixels: RGB in [0, 1] normalised with ImageNet's mean/std (the protocol's ``PIXEL_MEAN`` /
  ``PIXEL_STD`` divided by 255); multi-scale training with the shorter side drawn from
  480..800 step 32 (max 1333, :func:`train_min_sizes`), shorter side 800 at test;
* BatchNorm: plain ``nn.BatchNorm2d`` in training mode everywhere (``FREEZE_AT 0``: nothing is
  frozen);
* RPN / RoI settings as detectron2's defaults: 12000/6000 boxes before NMS (train/test), 2000/1000
  after, NMS 0.7, 256 anchors and 512 RoIs per image, score threshold 0.05, NMS 0.5, 100
  detections per image at test.

The pre-trained weights go into the ResNet-50 before the model is built
(:func:`transfer.backbone_weights.load_backbone_weights`), so both the trunk and res5 get them.

Examples:
    >>> train_min_sizes(PROTOCOL_MIN_SIZE_TEST)[0], PROTOCOL_MIN_SIZE_TEST
    (480, 800)
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from transfer.voc_format import VOC_CLASSES

PROTOCOL_MIN_SIZES_TRAIN: tuple[int, ...] = tuple(range(480, 801, 32))
"""Shorter sides drawn in training (detectron2 ``MIN_SIZE_TRAIN``, sampling "choice")."""
PROTOCOL_MIN_SIZE_TEST = 800
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # = PIXEL_MEAN [123.675, 116.280, 103.530] / 255, RGB
IMAGENET_STD = (0.229, 0.224, 0.225)  # = PIXEL_STD [58.395, 57.120, 57.375] / 255


class ResNetC4Trunk(nn.Module):
    """The stem and res2-res4 (``conv1`` .. ``layer3``) of a torchvision ResNet-50.

    Maps images (N, 3, H, W) to the stride-16 map (N, 1024, ceil(H/16), ceil(W/16)). Keeps
    torchvision's module names, so its state_dict keys are the ResNet's (``conv1.weight``,
    ``layer3.5.bn3.running_var``, ...).

    Args:
        resnet: A torchvision ResNet-50; its modules are shared, not copied.

    Examples:
        >>> import torch
        >>> trunk = ResNetC4Trunk(torchvision.models.resnet50())
        >>> trunk(torch.zeros(1, 3, 64, 96)).shape, trunk.out_channels
        (torch.Size([1, 1024, 4, 6]), 1024)
    """

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.out_channels = 1024  # read by torchvision's FasterRCNN

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        return self.layer3(self.layer2(self.layer1(x)))  # (N, 1024, H/16, W/16)


class Res5BoxHead(nn.Module):
    """The C4 box head: res5 on the 14x14 RoI features, an extra BatchNorm, global pooling.

    (R, 1024, 14, 14) -> res5 (R, 2048, 7, 7) -> BatchNorm2d(2048) -> mean over 7x7 -> (R, 2048).
    The extra norm is MoCo's ``Res5ROIHeadsExtraNorm`` (a new layer, not pre-trained).

    Args:
        res5: ``layer4`` of a torchvision ResNet-50 (shared, not copied).
        extra_norm: Add the BatchNorm after res5.

    Examples:
        >>> import torch
        >>> head = Res5BoxHead(torchvision.models.resnet50().layer4)
        >>> head(torch.zeros(3, 1024, 14, 14)).shape
        torch.Size([3, 2048])
    """

    def __init__(self, res5: nn.Module, extra_norm: bool = True) -> None:
        super().__init__()
        self.res5 = res5
        self.norm: nn.Module = nn.BatchNorm2d(2048) if extra_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.res5(x))  # (R, 2048, 7, 7)
        return x.mean(dim=(2, 3))  # (R, 2048)


def train_min_sizes(min_size: int) -> tuple[int, ...]:
    """The shorter sides drawn in training: 480..800 step 32, scaled by ``min_size / 800``.

    ``min_size=800`` gives the protocol's 11 sizes; the last size is always ``min_size`` (the
    test size, which torchvision takes as the last entry).

    Examples:
        >>> train_min_sizes(800)
        (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
        >>> train_min_sizes(64)
        (38, 41, 44, 46, 49, 51, 54, 56, 59, 61, 64)
    """
    scale = min_size / PROTOCOL_MIN_SIZE_TEST
    return tuple(sorted({round(s * scale) for s in PROTOCOL_MIN_SIZES_TRAIN}))


def build_model(
    resnet: torchvision.models.ResNet | None = None,
    num_classes: int = len(VOC_CLASSES) + 1,
    min_size: int = PROTOCOL_MIN_SIZE_TEST,
    max_size: int = 1333,
    roi_batch_size: int = 512,
) -> FasterRCNN:
    """Faster R-CNN R50-C4 as in the detectron2 protocol (see the module docstring).

    Args:
        resnet: The ResNet-50 to build from (its modules are used in place); a fresh
            torchvision ``resnet50()`` (random init) when None.
        num_classes: Classes including the background (21 for VOC).
        min_size: Shorter side at test; training draws from :func:`train_min_sizes`.
        max_size: Longest side cap (train and test).
        roi_batch_size: RoIs sampled per image for the box head loss (detectron2: 512).

    Returns:
        A torchvision ``FasterRCNN``: in training mode ``model(images, targets)`` returns the
        four losses, in eval mode ``model(images)`` the detections per image (``boxes`` (k, 4)
        in input pixels, ``scores`` (k,), ``labels`` (k,) in 1..20).

    Examples:
        >>> import torch
        >>> model = build_model(min_size=64, max_size=96).eval()
        >>> with torch.no_grad():
        ...     out = model([torch.rand(3, 64, 80)])
        >>> sorted(out[0])
        ['boxes', 'labels', 'scores']
    """
    if resnet is None:
        resnet = torchvision.models.resnet50(weights=None)
    predictor = FastRCNNPredictor(2048, num_classes)
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    return FasterRCNN(
        ResNetC4Trunk(resnet),
        min_size=train_min_sizes(min_size),
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=AnchorGenerator(
            sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)
        ),
        rpn_pre_nms_top_n_train=12000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_train=2000,
        rpn_post_nms_top_n_test=1000,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=0),
        box_head=Res5BoxHead(resnet.layer4),
        box_predictor=predictor,
        box_batch_size_per_image=roi_batch_size,
    )
