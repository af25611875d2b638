"""Our ImageNet-family networks as backbones of torchvision's detectors (Sec. 4.3 and Appendix A).

Two forms:
  C4  (the paper's Faster R-CNN): the image is shared up to conv4_x (stride 16); RoIs are pooled from that map to
      14x14 and conv5_x runs once per region as the box head (its first block's stride brings 14 to 7), followed
      by global average pooling; one RPN on the conv4_x map with 15 anchors (5 sizes x 3 aspect ratios).
  FPN (what most users run today, Lin et al. 2017): conv2_x..conv5_x feed a feature pyramid; torchvision's layout
      (`backbone.body.*`, `backbone.fpn.*`), so that a torchvision `fasterrcnn_resnet50_fpn` state_dict loads
      strictly into `build_detector(create_model("resnet50", stride_in_1x1=False), form="fpn", num_classes=91)`.

Batch statistics of a detection batch (1-2 images per GPU in the paper) are poor, so BN is frozen by default (its
ImageNet statistics become constants, torchvision's FrozenBatchNorm2d), and only the top `trainable_layers` stages
learn, as in torchvision (5 = everything, 0 = nothing of the backbone).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..data.preprocess import preprocessing_of
from ..models import ResNet, create_model
from ..models.resnet import stem_forward

FORMS = ("c4", "fpn")
KINDS = ("faster_rcnn", "mask_rcnn")
# torchvision's order: the stage nearest the output is the first to be trained.
TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


class ResNetBody(nn.Module):
    """The stem and the first stages of a ResNet under torchvision's names (conv1, bn1, layer1, ...), returning
    the outputs of `return_layers` (stage name -> output key), as torchvision's IntermediateLayerGetter does for
    its own ResNets. Written out because that getter runs the children in registration order, and ours registers
    the max pool before bn1 (pre-activation nets have no bn1 in the stem at all)."""

    def __init__(self, model: ResNet, return_layers: dict[str, str]) -> None:
        super().__init__()
        unknown = set(return_layers) - set(model.stage_names)
        if unknown:
            raise ValueError(f"{model.spec.name} has no stage {sorted(unknown)}; stages: {model.stage_names}")
        self.conv1, self.bn1, self.relu, self.maxpool = model.conv1, model.bn1, model.relu, model.maxpool
        last = max(model.stage_names.index(name) for name in return_layers)
        self.stage_names = model.stage_names[: last + 1]
        for name in self.stage_names:
            self.add_module(name, getattr(model, name))
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = stem_forward(self, x)
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.return_layers:
                features[self.return_layers[name]] = x
        return features


class ResNetFPN(nn.Module):
    """conv2_x..conv5_x (strides 4..32) -> a 256-channel pyramid P2..P5 plus P6 by max pooling (torchvision's
    BackboneWithFPN, over our body)."""

    def __init__(self, model: ResNet, returned_stages: Sequence[int] = (1, 2, 3, 4), out_channels: int = 256) -> None:
        super().__init__()
        self.body = ResNetBody(model, {f"layer{k}": str(i) for i, k in enumerate(returned_stages)})
        in_channels = [int(model.feature_info[k - 1]["channels"]) for k in returned_stages]
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


class ResNetC4Head(nn.Module):
    """conv5_x as the per-region head (Appendix A): pooled RoI features -> conv5_x -> global average pool."""

    def __init__(self, model: ResNet) -> None:
        super().__init__()
        self.layer4 = model.layer4
        self.final_bn, self.relu = model.final_bn, model.relu  # pre-activation nets end the trunk with BN-ReLU
        self.out_channels = model.num_features

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        x = self.layer4(regions)
        if self.final_bn is not None:
            x = self.relu(self.final_bn(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d of `module` becomes a FrozenBatchNorm2d holding the same statistics and affine
    parameters (in place; returns `module`)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def set_trainable_layers(model: ResNet, trainable_layers: int) -> None:
    """Freeze all but the top `trainable_layers` stages (torchvision's rule: 5 also trains conv1 and bn1)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be 0..5 (stages from the top; 5 = the whole backbone), "
                         f"got {trainable_layers}")
    trained = list(TRAINABLE_ORDER[:trainable_layers])
    trained += ["final_bn"] if trainable_layers >= 1 else []  # a pre-activation net's last BN ends conv5_x
    trained += ["bn1"] if trainable_layers == 5 else []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix + ".") for prefix in trained))


def build_detector(backbone: str | ResNet, *, num_classes: int, form: str = "fpn", kind: str = "faster_rcnn",
                   trainable_layers: int = 3, frozen_bn: bool = True, pretrained: bool | str | None = None,
                   anchor_sizes: Sequence[int] | None = None, box_representation: int | None = None,
                   **detector_options: Any) -> FasterRCNN:
    """A torchvision Faster R-CNN (or Mask R-CNN, FPN form) on one of our ImageNet-family networks.

    backbone: a model name or shipped MODEL.TAG (built with `create_model(name, pretrained=pretrained)`, which takes
    a tag, MODEL.TAG, a weight file or a run directory) or a ResNet (copied, so the classifier passed in is left as
    it is). num_classes counts the background (COCO: 91). anchor_sizes: one size per pyramid level (FPN, default
    32..512) or the sizes of the single C4 map (default the same five), with aspect ratios 0.5, 1, 2.
    box_representation: the width of the FPN box head's two hidden layers (None: torchvision's 1,024; fewer make a
    smaller file for a small dataset). The image normalisation is the backbone's own preprocessing record (its
    per-channel mean, and std where it divides by one). detector_options go to torchvision's FasterRCNN/MaskRCNN
    (min_size, max_size, box_score_thresh, ...).
    """
    if form not in FORMS:
        raise ValueError(f"unknown detector form {form!r}; valid forms: {', '.join(FORMS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if kind == "mask_rcnn" and form == "c4":
        raise ValueError("Mask R-CNN is built in the FPN form only here (its C4 mask head shares conv5_x with the "
                         "box head, which torchvision's MaskRCNN does not support): use form='fpn'")
    model = create_model(backbone, pretrained=pretrained) if isinstance(backbone, str) else copy.deepcopy(backbone)
    if model.spec.family != "imagenet":
        raise ValueError(f"{model.spec.name} is a CIFAR network (3 stages, stride 4): detection backbones need an "
                         "ImageNet-family network (resnet18..152, plain18..152, preact_resnet*)")
    record = preprocessing_of(model)
    detector_options.setdefault("image_mean", list(record.mean))
    detector_options.setdefault("image_std", list(record.std) if record.std is not None else [1.0, 1.0, 1.0])
    set_trainable_layers(model, trainable_layers)
    if frozen_bn:
        freeze_batchnorm(model)
    ratios = (0.5, 1.0, 2.0)
    if form == "fpn":
        sizes = tuple(anchor_sizes or (32, 64, 128, 256, 512))
        if len(sizes) != 5:
            raise ValueError(f"the FPN form has 5 pyramid levels (P2..P6): give 5 anchor sizes, got {len(sizes)}")
        anchors = AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * len(sizes))
        network = MaskRCNN if kind == "mask_rcnn" else FasterRCNN
        if box_representation is not None:  # torchvision's heads at another width; the predictors then set the classes
            detector_options |= {"box_head": TwoMLPHead(256 * 7 * 7, box_representation),
                                 "box_predictor": FastRCNNPredictor(box_representation, num_classes)}
            if kind == "mask_rcnn":
                detector_options["mask_predictor"] = MaskRCNNPredictor(256, 256, num_classes)
        return network(ResNetFPN(model), num_classes=None if box_representation else num_classes,
                       rpn_anchor_generator=anchors, **detector_options)
    sizes = tuple(anchor_sizes or (32, 64, 128, 256, 512))
    trunk = ResNetBody(model, {"layer3": "0"})
    trunk.out_channels = int(model.feature_info[2]["channels"])
    head = ResNetC4Head(model)
    anchors = AnchorGenerator((sizes,), (ratios,))
    return FasterRCNN(trunk, num_classes=None, rpn_anchor_generator=anchors,  # the predictor sets the classes
                      rpn_head=RPNHead(trunk.out_channels, len(sizes) * len(ratios)),
                      box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
                      box_head=head, box_predictor=FastRCNNPredictor(head.out_channels, num_classes),
                      **detector_options)
