"""A bundle whose checkpoint was not kept can be loaded back into the network: the imported net
computes what the bundle's graph computes (batch norms folded by export come back as identities)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepshield.faces.crop import CropPolicy
from deepshield.inference.runtime import OnnxClassifier
from deepshield.models.card import ModelCard
from deepshield.models.export import export_bundle
from deepshield.models.network import DeepfakeNet, normalize_batch
from deepshield.models.onnx_import import OnnxImportError, load_onnx_weights


def _trained_looking(net: DeepfakeNet, seed: int) -> DeepfakeNet:
    """Batch-norm statistics far from the identity, so that folding matters (EfficientNet: its ImageNet
    ones), and a head that gives logits of a few units."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules() if net.backbone_name == "tiny" else ():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.2)
        torch.nn.init.normal_(net.head.weight, std=0.5, generator=generator)
    return net.eval()


@pytest.mark.parametrize(("backbone", "size"), [("tiny", 64), ("efficientnet_lite0", 96)])
def test_imported_network_computes_the_bundles_outputs(tmp_path, astronaut, backbone, size):
    torch.manual_seed(0)
    source = _trained_looking(DeepfakeNet(backbone, size, pretrained=backbone != "tiny"), seed=1)
    card = ModelCard(name="t", version="1", architecture=backbone, input_size=size, crop_policy=CropPolicy(size=size))
    bundle = export_bundle(source, card, tmp_path / "bundle")

    imported = load_onnx_weights(DeepfakeNet(backbone, size, pretrained=False), bundle / "model.onnx").eval()
    crops = np.stack([astronaut[y : y + size, x : x + size] for y, x in [(60, 150), (0, 0), (300, 300)]])
    with torch.no_grad():
        logits, cams = imported(normalize_batch(torch.from_numpy(crops), card.normalization))
    scores = OnnxClassifier(bundle).score(crops)
    assert np.ptp(scores.logits) > 0.01  # the crops really differ
    np.testing.assert_allclose(logits.numpy(), scores.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cams.numpy(), scores.cams, rtol=1e-4, atol=1e-4)
    # A fresh, untouched network computed something else: the weights did come from the graph.
    with torch.no_grad():
        fresh, _ = _trained_looking(DeepfakeNet(backbone, size, pretrained=backbone != "tiny"), seed=2)(
            normalize_batch(torch.from_numpy(crops), card.normalization)
        )
    assert np.abs(fresh.numpy() - scores.logits).max() > 1e-2


def test_graph_of_another_architecture_is_refused(tmp_path):
    source = DeepfakeNet("tiny", 64, pretrained=False).eval()
    card = ModelCard(name="t", version="1", architecture="tiny", input_size=64, crop_policy=CropPolicy(size=64))
    bundle = export_bundle(source, card, tmp_path / "bundle")
    with pytest.raises(OnnxImportError, match="convolutions in the graph"):
        load_onnx_weights(DeepfakeNet("efficientnet_lite0", 64, pretrained=False), bundle / "model.onnx")
