"""The web page's examples show the product right: each falls on its labelled side with the shipped model,
or (a known miss) where its entry says the shipped model puts it."""

from __future__ import annotations

import json

import pytest

from deepshield.inference.analysis import Detector
from deepshield.serving.app import STATIC_DIR

EXAMPLES = STATIC_DIR / "examples"


@pytest.fixture(scope="module")
def shipped() -> Detector:
    return Detector.from_bundle()


def examples() -> list[dict]:
    return json.loads((EXAMPLES / "index.json").read_text())


def test_every_example_is_labelled_and_present():
    entries = examples()
    assert {e["truth"] for e in entries} == {"real", "manipulated"}
    assert {e["kind"] for e in entries} == {"image", "video"}
    for entry in entries:
        assert (EXAMPLES / entry["file"]).is_file() and entry["title"] and entry["description"]


@pytest.mark.parametrize("entry", examples(), ids=lambda e: e["file"])
def test_example_score_falls_on_its_labelled_side(shipped, entry):
    result = shipped.analyze_path(EXAMPLES / entry["file"], frames=32)
    assert result.kind == entry["kind"]
    band = result.inconclusive
    said = f"{entry['file']} ({entry['truth']}): {result.verdict.reason}"
    if entry["truth"] == "manipulated":
        # An example the shipped model misses says so in its description and "shipped_verdict".
        assert result.verdict.label == entry.get("shipped_verdict", "likely_manipulated"), said
    else:
        # The face-swap score finds no signs. A real video may read inconclusive, never flagged: its
        # frames, a pan over a studio portrait, scored 92% on 1.1.0's synthetic-face score (threshold
        # 94.8%; docs/synthetic-faces.md, a known weakness on high-quality portraits).
        assert result.verdict.probability < band.low, said
        assert result.verdict.label in ("no_signs_found", "inconclusive"), said
        if entry["kind"] == "image":
            assert result.verdict.label == "no_signs_found", said
