"""What the synthetic-face score costs: `Detector.analyze_image` p50 / p95 with a two-output bundle
against a one-output bundle of the same trunk, in the same run, the two alternating call by call.
Prints a table; not part of the test suite.

    python bench/bench_synthetic_latency.py             # two bundles made here (random EfficientNet-Lite0)
    python bench/bench_synthetic_latency.py --model TWO_OUTPUT --baseline ONE_OUTPUT

Target (issue #15): the two-output p50 within 10% of the one-output p50 (one graph, one pass).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import make_photo, percentile, time_interleaved
from deepshield.errors import exit_status

TARGET_RATIO = 1.10


def make_bundles(workdir: Path, size: int) -> tuple[Path, Path]:
    """One EfficientNet-Lite0 trunk exported twice: with and without the synthetic head."""
    import torch

    from deepshield.faces.crop import CropPolicy
    from deepshield.models.card import Calibration, ModelCard, SyntheticScoreInfo, card_outputs
    from deepshield.models.export import export_bundle
    from deepshield.models.network import DeepfakeNet

    torch.manual_seed(0)
    two = DeepfakeNet("efficientnet_lite0", size, pretrained=False, synthetic_center=1 / 1.5).eval()
    one = DeepfakeNet("efficientnet_lite0", size, pretrained=False).eval()
    one.load_state_dict({k: v for k, v in two.state_dict().items() if not k.startswith("synthetic_head.")})
    base = {
        "version": "bench",
        "architecture": "efficientnet_lite0",
        "input_size": size,
        "crop_policy": CropPolicy(size=size),
    }
    one_card = ModelCard(name="one-output", **base)
    two_card = ModelCard(
        name="two-output",
        outputs=card_outputs(True),
        synthetic=SyntheticScoreInfo(calibration=Calibration(), pooling=two.synthetic_pooling()),
        **base,
    )
    return export_bundle(two, two_card, workdir / "two"), export_bundle(one, one_card, workdir / "one")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="two-output bundle (default: one made here, with --baseline)")
    parser.add_argument(
        "--baseline", help="one-output bundle (default: the same trunk made here without the synthetic head)"
    )
    parser.add_argument("--size", type=int, default=224, help="input size of the bundles made here (default 224)")
    parser.add_argument("--runs", type=int, default=50, help="calls per bundle (default 50)")
    parser.add_argument("--graph-runs", type=int, default=300, help="graph-only calls, one crop (default 300)")
    args = parser.parse_args(argv)
    if bool(args.model) != bool(args.baseline):
        parser.error("give both --model and --baseline, or neither")

    from deepshield.inference.analysis import Detector

    with tempfile.TemporaryDirectory() as tmp:
        two, one = (Path(args.model), Path(args.baseline)) if args.model else make_bundles(Path(tmp), args.size)
        photo = make_photo()
        detectors = {"one-output": Detector.from_bundle(one), "two-output": Detector.from_bundle(two)}
        if detectors["two-output"].card.synthetic is None or detectors["one-output"].card.synthetic is not None:
            parser.error("--model must have the synthetic-face score and --baseline must not")
        seconds = time_interleaved(
            {name: (lambda d=d: d.analyze_image(photo, heatmaps=True)) for name, d in detectors.items()}, args.runs
        )
        # The graph alone on one face crop, the only stage a second output can cost anything in (decoding
        # and detection are shared); many more calls, as a loaded machine makes end-to-end figures noisy.
        side = detectors["one-output"].card.input_size
        crop = np.full((1, side, side, 3), 128, np.uint8)
        graph_calls = {name: (lambda d=d: d.classifier.score(crop)) for name, d in detectors.items()}
        graph = time_interleaved(graph_calls, args.graph_runs)
    p50 = {name: percentile(times, 50) * 1000 for name, times in seconds.items()}
    print(f"analyze_image, 1 MP photo, {args.runs} calls each, alternating; load average {os.getloadavg()[0]:.1f}")
    print(f"{'bundle':<12} {'p50 ms':>8} {'p95 ms':>8}")
    for name, times in seconds.items():
        print(f"{name:<12} {p50[name]:>8.1f} {percentile(times, 95) * 1000:>8.1f}")
    for name, times in graph.items():
        p50_ms, p95_ms = percentile(times, 50) * 1000, percentile(times, 95) * 1000
        print(f"{name:<12} {p50_ms:>8.2f} {p95_ms:>8.2f}   graph only, 1 crop")
    graph_ratio = percentile(graph["two-output"], 50) / percentile(graph["one-output"], 50)
    print(f"graph only, two-output / one-output p50: {graph_ratio:.3f}")
    ratio = p50["two-output"] / p50["one-output"]
    print(
        f"two-output / one-output p50: {ratio:.3f} "
        f"(target <= {TARGET_RATIO:.2f}: {'met' if ratio <= TARGET_RATIO else 'missed'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_synthetic_latency"))
