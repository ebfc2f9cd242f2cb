"""Load a bundle's ONNX weights back into a `DeepfakeNet`, for a bundle whose training checkpoint was
not kept (the shipped 1.0.0 model): a frozen synthetic-face head can then be trained on its trunk.

Export folds each batch norm into the convolution before it, so the graph holds one weight and bias
per convolution. The network gets them in forward order, and each batch norm becomes the identity
(mean 0, variance 1 - eps, scale 1) carrying the folded bias: the same function, in eval mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch
from numpy.typing import NDArray
from onnx import numpy_helper
from torch import nn

from deepshield.models.network import DeepfakeNet


class OnnxImportError(ValueError):
    """The graph's convolutions do not line up with the network's."""


def _graph_convolutions(onnx_path: Path) -> list[tuple[NDArray[Any], NDArray[Any] | None]]:
    model = onnx.load(str(onnx_path))
    weights = {init.name: numpy_helper.to_array(init).copy() for init in model.graph.initializer}  # writable
    found = []
    for node in model.graph.node:  # nodes are stored in topological order: the forward order here
        if node.op_type == "Conv":
            bias = weights[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            found.append((weights[node.input[1]], bias))
    return found


def _forward_order(net: DeepfakeNet) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each convolution in the order the forward pass calls it, with the batch norm right after it."""
    calls: list[nn.Module] = []
    hooks = [
        module.register_forward_hook(lambda module, _inputs, _output: calls.append(module))
        for module in net.modules()
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d))
    ]
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, net.input_size, net.input_size))
    finally:
        for hook in hooks:
            hook.remove()
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []
    for index, module in enumerate(calls):
        if isinstance(module, nn.Conv2d):
            after = calls[index + 1] if index + 1 < len(calls) else None
            folded = after if isinstance(after, nn.BatchNorm2d) and after.num_features == module.out_channels else None
            pairs.append((module, folded))
    return pairs


def load_onnx_weights(net: DeepfakeNet, onnx_path: Path | str) -> DeepfakeNet:
    """Set `net`'s weights from `onnx_path` (a graph exported from the same architecture); returns net."""
    graph = _graph_convolutions(Path(onnx_path))
    layers = _forward_order(net)
    if len(graph) != len(layers):
        raise OnnxImportError(f"{onnx_path}: {len(graph)} convolutions in the graph, {len(layers)} in the network")
    with torch.no_grad():
        for position, ((weight, bias), (conv, norm)) in enumerate(zip(graph, layers, strict=True)):
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise OnnxImportError(
                    f"{onnx_path}: convolution {position} is {weight.shape} in the graph, "
                    f"{tuple(conv.weight.shape)} in the network"
                )
            conv.weight.copy_(torch.from_numpy(weight))
            folded_bias = torch.zeros(conv.out_channels) if bias is None else torch.from_numpy(bias)
            if norm is None:
                if conv.bias is None:
                    if bias is not None:
                        raise OnnxImportError(f"{onnx_path}: convolution {position} has a bias the network lacks")
                else:
                    conv.bias.copy_(folded_bias)
                continue
            if conv.bias is not None:
                conv.bias.zero_()
            if norm.running_mean is None or norm.running_var is None:
                raise OnnxImportError(f"batch norm after convolution {position} keeps no running statistics")
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
            norm.weight.fill_(1.0)
            norm.bias.copy_(folded_bias)
    return net
