"""Write a model bundle: model.onnx (logit + CAM, and the synthetic-face logit when the network has
that head; preprocessing inside) and model_card.json."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from deepshield.media.files import file_sha256
from deepshield.models.card import CARD_FILE, ONNX_FILE, ModelCard, building_bundle
from deepshield.models.network import DeepfakeNet, ExportWrapper


def export_bundle(net: DeepfakeNet, card: ModelCard, out_dir: Path | str) -> Path:
    """Export `net` (switched to eval mode) with `card` into out_dir, replacing what is there (callers refuse
    a folder they may not replace first: check_bundle_folder); returns out_dir. The bundle is made in a
    sibling `.part` folder and renamed into place: a stopped export left a graph beside a cut-off card,
    a bundle that failed to load and a folder a rerun refused without --force."""
    out_dir = Path(out_dir)
    if card.input_size != net.input_size:
        raise ValueError(f"card input_size {card.input_size} != network input_size {net.input_size}")
    if (card.synthetic is not None) != net.has_synthetic_head:
        raise ValueError(
            f"card synthetic score {'present' if card.synthetic else 'absent'}, network synthetic head "
            f"{'present' if net.has_synthetic_head else 'absent'}: they must agree"
        )
    outputs = card.output_names()
    wrapper = ExportWrapper(net, card.normalization).eval()
    with building_bundle(out_dir) as building:
        _write_bundle(wrapper, card, outputs, building)
    return out_dir


def _write_bundle(wrapper: ExportWrapper, card: ModelCard, outputs: list[str], building: Path) -> None:
    dummy = torch.zeros(2, card.input_size, card.input_size, 3, dtype=torch.uint8)
    onnx_path = building / ONNX_FILE
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that the normalisation's tensors become constants (they are: the card's
        # mean and std) and that strided slices are not constant-folded; neither is a fault.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(onnx_path),
            input_names=["image"],
            output_names=outputs,
            dynamic_axes={"image": {0: "batch"}} | {name: {0: "batch"} for name in outputs},
            opset_version=17,
            dynamo=False,
        )
    card = card.model_copy(update={"onnx_sha256": file_sha256(onnx_path)})
    (building / CARD_FILE).write_text(card.model_dump_json(indent=2))
