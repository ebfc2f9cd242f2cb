"""Write a model bundle: model.onnx (logit + CAM, and the synthetic-face logit when the network has
that head; preprocessing inside) and model_card.json."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from deepshield.media.files import file_sha256
from deepshield.models.card import CARD_FILE, ONNX_FILE, ModelCard
from deepshield.models.network import DeepfakeNet, ExportWrapper


def export_bundle(net: DeepfakeNet, card: ModelCard, out_dir: Path | str) -> Path:
    """Export `net` (switched to eval mode) with `card` into out_dir; returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if card.input_size != net.input_size:
        raise ValueError(f"card input_size {card.input_size} != network input_size {net.input_size}")
    if (card.synthetic is not None) != net.has_synthetic_head:
        raise ValueError(
            f"card synthetic score {'present' if card.synthetic else 'absent'}, network synthetic head "
            f"{'present' if net.has_synthetic_head else 'absent'}: they must agree"
        )
    outputs = card.output_names()
    wrapper = ExportWrapper(net, card.normalization).eval()
    dummy = torch.zeros(2, card.input_size, card.input_size, 3, dtype=torch.uint8)
    onnx_path = out_dir / ONNX_FILE
    tmp_path = out_dir / (ONNX_FILE + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that the normalisation's tensors become constants (they are: the card's
        # mean and std) and that strided slices are not constant-folded; neither is a fault.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(tmp_path),
            input_names=["image"],
            output_names=outputs,
            dynamic_axes={"image": {0: "batch"}} | {name: {0: "batch"} for name in outputs},
            opset_version=17,
            dynamo=False,
        )
    tmp_path.replace(onnx_path)
    card = card.model_copy(update={"onnx_sha256": file_sha256(onnx_path)})
    (out_dir / CARD_FILE).write_text(card.model_dump_json(indent=2))
    return out_dir
