"""The web page in a real browser: headless Debian Chromium driven by Playwright, against a real uvicorn server.

Skipped when Chromium or Playwright is missing, except under CI=true, where it must run
(`.ci/setup-system.sh` installs Chromium; never `playwright install`).
"""

from __future__ import annotations

import colorsys
import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import queue
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from deepshield.inference.analysis import Detector
from deepshield.inference.verdict import shown_probability
from deepshield.media.units import parse_clock_time
from deepshield.media.video import VideoLimits, VideoSpan
from deepshield.serving.app import create_app
from deepshield.serving.settings import ServerSettings
from tests.conftest import ScriptedClassifier, bundle_with_record, photo_with_exif, write_video
from tests.provenance_support import edited_from, with_credentials
from tests.serving_support import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT_COPY = Path("/tmp/deepshield-screenshot.png")
TIMEOUT_MS = 60_000


def _require_browser():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Python playwright is not installed (pip install playwright==1.64.1)"
        sync_playwright = None
    if reason is None and not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install -y chromium; see .ci/setup-system.sh)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test must run under CI: {reason}")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def server(detector):
    app = create_app(detector, ServerSettings())
    with live_server(app) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "request",
        lambda request: outside.append(request.url) if not request.url.startswith((server, "data:", "blob:")) else None,
    )
    page.problems = problems
    page.outside = outside
    yield page
    context.close()


def _jpeg(path: Path, image: np.ndarray) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=92)
    path.write_bytes(buffer.getvalue())
    return path


@contextlib.contextmanager
def _page_of(browser, detector, settings: ServerSettings | None = None) -> Iterator:
    """The page of a server of its own for `detector`, opened."""
    with live_server(create_app(detector, settings or ServerSettings())) as base_url:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(base_url + "/")
            yield page
        finally:
            context.close()


def _luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG relative luminance of an RGB colour (0-1 channels)."""
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast_with_white(rgb: tuple[float, float, float]) -> float:
    """WCAG contrast ratio of an RGB colour (0-1 channels) against white."""
    return 1.05 / (_luminance(rgb) + 0.05)


def _css_rgb(colour: str) -> tuple[float, float, float]:
    """A computed style's `rgb(r, g, b)` as 0-1 channels."""
    red, green, blue = (int(c) / 255 for c in re.findall(r"\d+", colour)[:3])
    return red, green, blue


def _posts_of(page, server: str) -> list[str]:
    """The paths (with queries) the page POSTs to the server, in order, as they are sent."""
    posts: list[str] = []
    page.on(
        "request", lambda request: posts.append(request.url.removeprefix(server)) if request.method == "POST" else None
    )
    return posts


def test_upload_an_image_and_see_scored_faces_with_heatmaps(page, server, astronaut, tmp_path):
    page.goto(server + "/")
    # The model's name, version and threshold are shown.
    page.wait_for_selector("[data-role=model-name]")
    assert page.inner_text("[data-role=model-name]") == "Model tiny-test 0.0.1"
    assert page.inner_text("[data-role=threshold]") == "Face-swap threshold 50.0%"
    assert page.locator("[data-role=not-calibrated]").count() == 0  # a calibrated model's scores

    page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
    page.wait_for_selector(".face-card")
    assert page.locator(".face-card").count() == 1
    score = page.inner_text(".face-card .face-score")
    assert score == "51% face-swap"  # the score that made the call (the tiny model's 0.51), named
    assert page.inner_text(".face-card .label") == "INCONCLUSIVE"  # inside its band of 40% to 60%
    # The detector's score says it is about finding the face ("detection confidence" read as the verdict's).
    meta = page.inner_text(".face-card .face-meta")
    assert re.search(r" · face-finder certainty that this is a face: \d+%", meta) and "confidence" not in meta
    # Screen readers hear the call when it arrives (a polite status, not shown on screen).
    announce = page.locator("#announce")
    assert announce.get_attribute("role") == "status" and announce.get_attribute("aria-live") == "polite"
    assert announce.text_content() == f"astronaut.jpg: {page.inner_text('#verdict-label')}"
    # The box is drawn on the image, and the crop and heatmap images have really loaded.
    assert page.locator("#photo-stage .face-box").count() == 1
    page.wait_for_function("document.getElementById('photo').naturalWidth > 0")
    for image in page.locator(".face-card .face-images img").all():
        assert image.evaluate("img => img.complete && img.naturalWidth === 64")
    assert page.inner_text("#verdict-label").startswith(
        ("Likely manipulated", "Inconclusive", "No signs of face swapping found")
    )
    assert page.inner_text("#result-file") == "Result for astronaut.jpg"
    assert "not fully AI-generated" not in page.inner_text(
        "#verdict-scope"
    ) and "fully AI-generated faces" in page.inner_text("#verdict-scope")
    assert page.inner_text("[data-role=band]") == "Face-swap inconclusive 40.0%–60.0%"
    assert not page.is_visible("#message")
    # A one-output model: the second score is said to be missing, not shown as 0.
    assert page.inner_text("[data-role=synthetic-threshold]") == "Synthetic-face score: not available in this model"
    missing = "Synthetic-face score: not available in this model"
    assert page.inner_text(".face-card [data-role=synthetic-score]") == missing
    # The whole result can be saved as shown: the same scores, named after the file.
    with page.expect_download() as saving:
        page.click("[data-role=download]")
    saved = json.loads(Path(saving.value.path()).read_text())
    assert saving.value.suggested_filename == "astronaut.deepshield.json"
    assert saved["file_name"] == "astronaut.jpg" and saved["result"]["kind"] == "image"
    assert len(saved["result"]["faces"]) == 1 and saved["result"]["faces"][0]["crop_png"].startswith("data:image/png")
    assert saved["file"]["sha256"] == hashlib.sha256((tmp_path / "astronaut.jpg").read_bytes()).hexdigest()

    shot = tmp_path / "deepshield-page.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert shot.stat().st_size > 10_000

    # A bad file: the server's message is shown, and the previous result is gone.
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are my notes, not a photo")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#message:not([hidden])")
    # One sentence, naming the file as the user wrote it.
    assert page.inner_text("#message-title") == "notes.jpg:"
    detail = page.inner_text("#message-detail")
    assert detail.startswith("Unsupported file type") and "File type not supported" not in detail
    assert not page.is_visible("#result")
    page.screenshot(path=str(tmp_path / "deepshield-error.png"), full_page=True)

    assert page.problems == []
    assert page.outside == []  # nothing fetched from anywhere but this server


def test_a_result_prints_as_a_report_without_the_controls(page, server, astronaut, tmp_path):
    page.goto(server + "/")
    assert not page.is_visible("[data-role=print]")  # nothing to print yet
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "Interview still.jpg", astronaut)))
    page.wait_for_selector(".face-card")
    header = page.locator("[data-role=print-header]")
    assert not header.is_visible()  # on screen the page says it already
    assert re.fullmatch(
        r"Deepfake Shield report · Interview still\.jpg · analysed \d{4}-\d\d-\d\d \d\d:\d\d UTC · model tiny-test 0\.0\.1",
        header.inner_text(),
    )

    page.evaluate("() => { window.printed = 0; window.print = () => { window.printed += 1; }; }")
    assert not page.get_attribute("#file-details", "open")
    page.click("[data-role=print]")
    assert page.evaluate("window.printed") == 1
    assert page.get_attribute("#file-details", "open") is not None  # the SHA-256 and thresholds go on paper
    page.evaluate("() => { document.getElementById('file-details').open = false; }")
    page.evaluate("() => window.dispatchEvent(new Event('beforeprint'))")  # the browser's own Print
    assert page.get_attribute("#file-details", "open") is not None

    page.emulate_media(media="print")
    for control in ("#dropzone", "#examples", "[data-role=print]", "[data-role=download]", ".topbar"):
        assert not page.is_visible(control), control
    for kept in ("[data-role=print-header]", "#verdict", ".face-card", "#file-facts", ".footer"):
        assert page.is_visible(kept), kept
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000  # the photo, crop and heatmap are in it
    assert page.problems == []


def test_no_signs_found_is_a_neutral_colour_not_a_passing_green(page, server):
    page.goto(server + "/")
    # A verdict panel and a face's badge as the page draws them for a call of no signs found.
    panel, text, badge = page.evaluate(
        """() => {
          const panel = document.createElement("div");
          panel.className = "verdict no_signs_found";
          panel.innerHTML = '<div class="verdict-label">No signs</div><span class="label no_signs_found">NO SIGNS</span>';
          document.querySelector("main").append(panel);
          return [getComputedStyle(panel).backgroundColor, getComputedStyle(panel.firstChild).color,
                  getComputedStyle(panel.lastChild).backgroundColor];
        }"""
    )
    # Green read as "passed" (it was #1f7a3a, hue 137): a blue-grey slate says nothing about authenticity.
    for colour in (text, badge):
        hue, _, saturation = colorsys.rgb_to_hls(*_css_rgb(colour))
        assert 190 <= hue * 360 <= 240 and saturation < 0.4, colour
    # Readable: the badge's white text, and the label's text on the panel (WCAG AA, 4.5:1).
    assert _contrast_with_white(_css_rgb(badge)) >= 4.5
    assert (_luminance(_css_rgb(panel)) + 0.05) / (_luminance(_css_rgb(text)) + 0.05) >= 4.5
    # The boxes' scale keeps green for low scores, but says a low score clears nothing.
    caption = page.text_content("#image-result figcaption")
    assert "green = low score (no signs found; not a clearance)" in caption
    assert page.problems == []


def test_the_footer_says_what_inconclusive_means_and_what_the_scores_are_not_for(page, server):
    page.goto(server + "/")
    footer = " ".join(page.inner_text(".footer").split())
    # "Too close to the threshold to call" was wrong for the synthetic-face score, whose band is wide.
    assert "scores in the inconclusive range are those where the model cannot call either way" in footer
    assert "too close to the threshold" not in footer
    assert "Not a sole basis for decisions about people." in footer
    assert page.problems == []


def test_the_introduction_says_a_heatmap_shows_evidence_not_the_edit(page, server):
    page.goto(server + "/")
    # As the footer says: "the regions that look manipulated" promised a map of the edit.
    intro = " ".join(page.inner_text(".intro > p").split())
    assert "a heatmap of where the model saw evidence (not a map of the edit)" in intro
    assert "look manipulated" not in intro
    assert page.problems == []


def test_the_files_own_metadata_is_shown_as_its_claims(page, server, astronaut, tmp_path):
    page.goto(server + "/")
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(photo_with_exif(astronaut))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".face-card")
    page.click("#file-details summary")
    names = [name.lower() for name in page.locator("#file-facts dt").all_inner_texts()]  # shown in capitals
    facts = dict(zip(names, page.locator("#file-facts dd").all_inner_texts()))
    assert facts["camera (metadata)"] == "Canon EOS 5D"
    assert facts["software (metadata)"] == "Adobe Photoshop 25.0"
    assert facts["date in the file"] == "2025:12:31 09:00:00"
    assert facts["location"] == "in the file's metadata (not shown here)"
    assert facts["pixels analysed"] == "512 × 512"
    assert "ai-generator settings" not in facts and "metadata" not in facts
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "stripped.jpg", astronaut)))
    page.wait_for_selector("#file-facts dd >> text=none found (sites and apps often remove it)")
    assert "not part of the scores" in page.inner_text("[data-role=metadata-note]")


def test_content_credentials_declaring_generative_ai_are_shown_beside_the_verdict(page, server, astronaut, tmp_path):
    page.goto(server + "/")
    signed = tmp_path / "generated.jpg"
    signed.write_bytes(with_credentials(photo_with_exif(astronaut), "image/jpeg"))
    page.set_input_files("#file-input", str(signed))
    page.wait_for_selector("[data-role=declared]:visible")
    notice = page.inner_text("[data-role=declared]")
    assert notice.startswith("The file declares “Created using generative AI” in its Content Credentials")
    # a name no trust list vouches for is the certificate's own word: anyone can make one naming a newsroom
    assert "signature valid: the file is as a certificate naming itself “Imaginary Labs” signed it" in notice
    assert "not part of the scores" in notice
    page.click("#file-details summary")
    names = [name.lower() for name in page.locator("#file-facts dt").all_inner_texts()]
    facts = dict(zip(names, page.locator("#file-facts dd").all_inner_texts()))
    assert facts["made with (c2pa)"] == "Imaginary Diffusion 3.1"
    assert facts["actions (c2pa)"] == "created"
    assert facts["signed by (c2pa)"] == "Imaginary Labs (its certificate's own word: not vouched for)"
    assert (
        facts["declared source"] == "Created using generative AI (trainedAlgorithmicMedia; in its Content Credentials)"
    )
    assert "c2pa problems" not in facts
    retouched = tmp_path / "retouched.jpg"
    retouched.write_bytes(edited_from(signed.read_bytes(), photo_with_exif(astronaut)))
    page.set_input_files("#file-input", str(retouched))
    page.wait_for_selector("#file-facts dd >> text=Imaginary Editor 2.0")
    assert page.inner_text("[data-role=declared]").startswith(
        "The file's Content Credentials (signature valid: the file is as a certificate naming itself “Imaginary Labs” "
        "signed it; no trust list was given to check who that is; a valid signature says nothing about whether what "
        "the file shows is real) say it was made from a file that declares "
        "“Created using generative AI”."
    )
    facts = dict(zip(
        [name.lower() for name in page.locator("#file-facts dt").all_inner_texts()],
        page.locator("#file-facts dd").all_inner_texts(),
    ))  # fmt: skip
    assert facts["made from (c2pa)"] == "generated.jpg"
    assert facts["declared source"].endswith("in the Content Credentials of a file it was made from)")
    plain = _jpeg(tmp_path / "plain.jpg", astronaut)
    page.set_input_files("#file-input", str(plain))
    page.wait_for_selector("#file-facts dd >> text=none found (sites and apps often remove it)")
    assert not page.is_visible("[data-role=declared]")
    page.set_input_files(
        "#file-input", [str(plain), str(signed)]
    )  # a set: the row of the file that declares AI says so
    page.wait_for_selector("#batch-summary:has-text('2 of 2 files analysed')")
    rows = page.locator("[data-role=batch-row]")
    assert [rows.nth(i).locator("[data-role=declared-tag]").count() for i in range(2)] == [0, 1]
    assert rows.nth(1).locator("[data-role=declared-tag]").inner_text() == "Declares AI"
    assert page.problems == []


def test_the_models_record_on_real_labelled_media_is_one_click_away(browser, tiny_bundle, tmp_path):
    bundle = bundle_with_record(tiny_bundle, tmp_path / "bundle")
    card = json.loads((bundle / "model_card.json").read_text())
    card["metrics"]["synthetic_bench_modern_swaps_fpr"] = 0.1  # the synthetic-face score's own false alarms
    (bundle / "model_card.json").write_text(json.dumps(card))
    with _page_of(browser, Detector.from_bundle(bundle)) as page:
        page.wait_for_selector("[data-role=model-record]:visible")
        page.click("#model-record summary")
        rows = [
            [cell.strip() for cell in row.split("\t")]
            for row in page.locator("[data-role=record-row]").all_inner_texts()
        ]
        # A set keeps the card's name (the key to its figures elsewhere) over a description in plain words.
        swaps = "photos and videos from six recent public face-swap tools, and the real faces they started from"
        dfdc = "videos from the Deepfake Detection Challenge sample, real and face-swapped"
        assert rows == [
            [
                "dev-eval/modern-swaps\n" + swaps,
                "0.60 [0.43, 0.74]",
                "0.73",
                "4.6% · 10.0% by the synthetic-face score",
            ],  # a set the card has no figures for is left out
            ["dev-eval/dfdc-sample †\n" + dfdc, "1.00 [1.00, 1.00]", "0.998", "—"],  # a perfect 1.00 only where it is
            ["its own synthesised blends (validation)", "—", "0.93", "0.9%"],
        ]
        assert page.locator("[data-role=record-about]").all_inner_texts() == [swaps, dfdc]
        note = page.inner_text("#model-record-note")
        # "Epoch" is training jargon: the sets chose which version of the model ships.
        assert "The labelled sets chose this model's version and threshold, so they flatter it" in note
        assert "† dev-eval/dfdc-sample: only 1 real and 3 fake files" in note and note.count("†") == 1
    with _page_of(browser, Detector.from_bundle(tiny_bundle)) as page:  # a card without such figures: no record
        page.wait_for_selector("[data-role=model-name]")
        assert not page.is_visible("[data-role=model-record]")
    # A model trained without benchmarks: its validation figures, said to be no real media's (they were hidden).
    card["metrics"] = {
        k: v for k, v in card["metrics"].items() if not k.startswith(("bench_", "real_fpr_modern", "synthetic_bench"))
    }
    (bundle / "model_card.json").write_text(json.dumps(card))
    with _page_of(browser, Detector.from_bundle(bundle)) as page:
        page.wait_for_selector("[data-role=model-record]:visible")
        page.click("#model-record summary")
        rows = [row.split("\t") for row in page.locator("[data-role=record-row]").all_inner_texts()]
        assert rows == [["its own synthesised blends (validation)", "—", "0.93", "0.9%"]]
        assert "No real media measured this model" in page.inner_text("#model-record-note")


def test_image_without_a_face_says_so(page, server, tmp_path):
    page.goto(server + "/")
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "wall.jpg", np.full((200, 300, 3), 170, np.uint8))))
    page.wait_for_selector("[data-role=no-face]")
    assert page.inner_text("#verdict-label") == "No face found — nothing was checked"
    # The server's reason, which says why (and what else holds: a TIFF's other pages), not the page's own words.
    assert page.inner_text("#verdict-reason").startswith("No face found (faces narrower than about 100 px")
    # Said once: the no-face box below repeated it in its own words ("100 pixels ... is looked for").
    assert page.inner_text("#result").count("often missed") == 1
    assert page.problems == []


def test_a_borderline_score_is_shown_as_inconclusive(browser, detector, astronaut, tmp_path):
    probability = detector.analyze_image(astronaut).faces[0].probability
    borderline = type(detector)(
        detector.classifier, detector.faces, threshold=probability
    )  # the score sits on the threshold
    with _page_of(browser, borderline) as page:
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "Borderline Photo (1).JPG", astronaut)))
        page.wait_for_selector(".face-card")
        assert page.get_attribute("#verdict", "class") == "verdict inconclusive"
        assert page.inner_text("#verdict-label").startswith("Inconclusive")
        assert page.inner_text(".face-card .label") == "INCONCLUSIVE"
        assert page.inner_text("#result-file") == "Result for Borderline Photo (1).JPG"


def test_on_a_phone_the_timeline_is_drawn_at_its_own_width_and_its_words_stay_readable(page, server):
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(server + "/")
    page.click("button.example[data-file='astronaut-pan.mp4']")
    page.wait_for_selector("#timeline svg circle.point")
    chart = page.eval_on_selector(
        "#timeline svg",
        "svg => ({ units: svg.viewBox.baseVal.width, shown: svg.getBoundingClientRect().width,"
        " tick: Math.min(...[...svg.querySelectorAll('text.tick')].map((t) => t.getBoundingClientRect().height)),"
        " dot: svg.querySelector('circle.point').getBoundingClientRect().width })",
    )
    assert chart["units"] <= 375 and abs(chart["units"] - chart["shown"]) < 2  # drawn 1:1, not shrunk from 860
    assert chart["tick"] >= 10 and chart["dot"] >= 10  # 11 px words, points a finger can find
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("button.example[data-file='astronaut-pan.mp4']")
    page.wait_for_function(
        "() => document.querySelector('#timeline svg').viewBox.baseVal.width > 600"
    )  # drawn again, wider


def test_on_a_phone_the_result_and_refusals_are_scrolled_into_sight(page, server, astronaut, tmp_path):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server + "/")
    in_sight = (
        "(id) => { const node = document.getElementById(id); const box = node.getBoundingClientRect();"
        " return !node.hidden && box.top >= 0 && box.top < innerHeight; }"
    )
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
    page.wait_for_selector(".face-card")
    page.wait_for_function(in_sight, arg="result")
    assert page.evaluate("scrollY") > 300  # it was below the drop zone and the examples
    page.evaluate("scrollTo(0, 0)")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    page.set_input_files("#file-input", str(empty))
    page.wait_for_function(in_sight, arg="message")
    assert page.inner_text("#message-detail") == "The file is empty."


def test_a_small_face_is_shown_with_its_caution(page, server, astronaut, tmp_path):
    page.goto(server + "/")
    small = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "small.jpg", small)))
    page.wait_for_selector(".face-card")
    caution = page.inner_text(".face-card [data-role=cautions]")
    assert re.fullmatch(r"Take care: small face \(\d+ px wide\): real faces were flagged far more often the smaller "
                        r"they were \(measured with the shipped model, not this one\)\.", caution), caution  # fmt: skip
    large = cv2.resize(astronaut, (640, 640), interpolation=cv2.INTER_CUBIC)
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "large.jpg", large)))
    page.wait_for_function("() => document.getElementById('result-file').innerText.includes('large.jpg')")
    assert page.locator(".face-card [data-role=cautions]").count() == 0


def test_a_score_is_never_rounded_across_an_edge_it_is_judged_by(page, server):
    page.goto(server + "/")
    shown = page.evaluate(
        """async () => {
          const { scorePct } = await import("/static/js/format.js");
          const terms = { threshold: 0.556, inconclusive: { low: 0.5, high: 0.574 } };
          return [0.497, 0.4999, 0.43, 0.5745, 0.568, 0.9, 0.998, 0.49996].map((p) => scorePct(p, terms));
        }"""
    )
    # whole percents unless "50%" would put a 49.7% score (no signs found) inside a band from 50.0%; to
    # four places at most, as the verdict's reason (at two, 0.49996 read 50.00%)
    assert shown == ["49.7%", "49.99%", "43%", "57.5%", "57%", "90%", ">99%", "49.996%"]
    # A face's second score, to a tenth at least: 56.77% read "56.8% (inconclusive)" beside a band to 56.78%.
    line = page.evaluate(
        """async () => {
          const { syntheticText } = await import("/static/js/format.js");
          const result = { synthetic_threshold: 0.4616, synthetic_inconclusive: { low: 0.134, high: 0.5678 } };
          return [0.5677, 0.3].map((p) => syntheticText(p, "inconclusive", "synthetic", result));
        }"""
    )
    assert [text.split(" (")[0] for text in line] == ["Synthetic-face score 56.77%", "Synthetic-face score 30.0%"]


def test_the_batch_spreadsheet_keeps_a_file_name_that_starts_as_a_formula_as_text(page, server):
    # A file named "=HYPERLINK(...).jpg" went into the CSV as it is: a spreadsheet opening it runs it.
    page.goto(server + "/")
    table = page.evaluate(
        """async () => {
          const { batchCsv } = await import("/static/js/batch.js");
          const failed = (name) => ({ file: { name }, analysis: null, error: "unsupported file type" });
          return batchCsv([failed('=HYPERLINK("http://x","y").jpg'), failed("+1.jpg"), failed("plain.jpg")]);
        }"""
    )
    names = [row["file_name"] for row in csv.DictReader(io.StringIO(table))]
    assert names == ['\'=HYPERLINK("http://x","y").jpg', "'+1.jpg", "plain.jpg"]


def test_the_batch_spreadsheet_counts_and_says_as_scan_does(page, server):
    # Its faces counted a video's stray tracks where scan's counts the counted people, and it had no reason or
    # cautions column, which scan's CSV has.
    page.goto(server + "/")
    table = page.evaluate(
        """async () => {
          const { batchCsv } = await import("/static/js/batch.js");
          const tracks = [
            { counted: true, cautions: ["small face (40 px)"] },
            { counted: false, cautions: ["uncertain detection (0.55)"] },
          ];
          const verdict = { label: "no_signs_found", reason: "no signs of manipulation" };
          const analysis = { result: { kind: "video", verdict, tracks, metadata: {} }, file: {} };
          return batchCsv([{ file: { name: "clip.mp4" }, analysis, error: null }]);
        }"""
    )
    (row,) = csv.DictReader(io.StringIO(table))
    assert (row["faces"], row["cautions"], row["reason"]) == ("1", "small face (40 px)", "no signs of manipulation")
    from deepshield.cli.scan import SUMMARY_FIELDS

    assert [name for name in SUMMARY_FIELDS if name in row] == [name for name in row if name in SUMMARY_FIELDS]


def test_sampled_frames_times_tell_neighbours_apart(page, server):
    page.goto(server + "/")
    shown = page.evaluate(
        """async () => {
          const { formatTime } = await import("/static/js/format.js");
          return [[3.31, 10], [3.31, 10, 0.31], [3.64, 10, 0.31], [3.5, 4], [65.25, 100, 0.05], [3725, 7200, 2]]
            .map((args) => formatTime(...args));
        }"""
    )
    # 32 frames of a 10 s video, 0.31 s apart, read "3 s" and "3 s" at the stretch's own precision
    assert shown == ["3 s", "3.3 s", "3.6 s", "3.5 s", "1:05.25", "1:02:05"]


def test_faces_and_people_are_listed_most_suspicious_first(page, server):
    page.goto(server + "/")
    order = page.evaluate(
        """async () => {
          const { mostSuspiciousFirst } = await import("/static/js/format.js");
          const result = { threshold: 0.556, synthetic_threshold: 0.6 };
          const items = [
            { name: "clear", label: "no_signs_found", driver: "manipulation", probability: 0.30 },
            { name: "band", label: "inconclusive", driver: "manipulation", probability: 0.52 },
            { name: "swap", label: "likely_manipulated", driver: "manipulation", probability: 0.70 },
            { name: "short", label: "likely_manipulated", driver: "manipulation", probability: 0.99, counted: false },
            { name: "generated", label: "likely_manipulated", driver: "synthetic", probability: 0.2, synthetic: 0.9 },
            { name: "clear too", label: "no_signs_found", driver: "manipulation", probability: 0.30 },
          ];
          return mostSuspiciousFirst(items, (item) => item, result).map((item) => item.name);
        }"""
    )
    # A synthetic call 0.30 over its threshold leads a face-swap call 0.144 over its own; a track that does
    # not count comes last, whatever its score; equal faces keep their order.
    assert order == ["generated", "swap", "band", "clear", "clear too", "short"]


def test_a_heatmap_under_a_synthetic_call_says_it_is_the_face_swap_scores(page, server):
    # "red = looks manipulated" under a "Likely AI-generated" badge read as where the face was generated.
    page.goto(server + "/")
    captions = page.evaluate(
        """async () => {
          const { heatmapCaption } = await import("/static/js/format.js");
          return [heatmapCaption("manipulation"), heatmapCaption("synthetic")];
        }"""
    )
    # Green, read as "fine" beside the boxes' green for low scores, is even odds, inside the inconclusive range.
    assert captions == [
        "Heatmap, one scale for every face: blue 0%, green ≈50% (even odds, not low), yellow ≈65%, "
        "red 100% (looks manipulated)",
        "Face-swap heatmap (the AI-generated score has no map)",
    ]


def test_a_videos_tracked_faces_say_how_many_count(page, server):
    # "Faces tracked 4" where two were stray one-frame detections that the verdict leaves out.
    page.goto(server + "/")
    said = page.evaluate(
        """async () => {
          const { countedTracks } = await import("/static/js/format.js");
          return [countedTracks([{ counted: true }, { counted: false }, { counted: true }, { counted: false }]),
                  countedTracks([{ counted: true }])];
        }"""
    )
    # counted first, as scan's --html page says it ("2 people counted (4 seen)")
    assert said == ["2 counted (4 seen)", "1"]


def test_a_photos_face_cards_lead_with_the_most_suspicious_face(browser, detector, astronaut, tmp_path):
    # Three faces scored 27%, 88% and 62% in reading order (threshold 50%): the cards go 88%, 62%, 27%, each
    # with its number, and the boxes on the photo stay in reading order.
    scripted = type(detector)(ScriptedClassifier([-1.0, 2.0, 0.5]), detector.faces)
    with _page_of(browser, scripted) as page:
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "three.jpg", np.concatenate([astronaut] * 3, axis=1))))
        page.wait_for_selector(".face-card")
        titles = page.eval_on_selector_all(".face-card .face-title", "nodes => nodes.map((n) => n.innerText)")
        scores = page.eval_on_selector_all(
            ".face-card [data-role=face-score]", "nodes => nodes.map((n) => n.innerText)"
        )
        boxes = page.eval_on_selector_all(".face-box", "nodes => nodes.map((n) => n.dataset.face)")
        labels = page.eval_on_selector_all(".face-box-label", "nodes => nodes.map((n) => n.innerText)")
    assert titles == ["Face 2", "Face 3", "Face 1"]
    assert labels == ["1 · 27%", "2 · 88%", "3 · 62%"]
    assert scores == ["88% face-swap", "62% face-swap", "27% face-swap"]  # read with a space between
    assert boxes == ["0", "1", "2"]


def test_a_keyboard_reaches_each_face_on_the_photo_and_its_card(browser, detector, astronaut, tmp_path):
    # The boxes on the photo were mouse-only: tabbing to one now lights it and its card up, as hovering
    # does, and Enter takes focus to its card.
    scripted = type(detector)(ScriptedClassifier([-1.0, 2.0]), detector.faces)
    with _page_of(browser, scripted) as page:
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "two.jpg", np.concatenate([astronaut] * 2, axis=1))))
        page.wait_for_selector(".face-card")
        second = page.locator('.face-box[data-face="1"]')
        assert second.get_attribute("aria-label") == "Face 2: 88.1% (face-swap score): show its card"
        second.focus()
        lit = 'nodes => nodes.filter((n) => n.classList.contains("highlight")).map((n) => n.tagName + n.dataset.face)'
        assert page.eval_on_selector_all("[data-face]", lit) == ["BUTTON1", "ARTICLE1"]
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.className + ' ' + document.activeElement.dataset.face") == (
            "face-card 1"
        )
        assert page.eval_on_selector_all("[data-face]", lit) == []  # the box left: lit no more
        page.keyboard.press("Shift+Tab")  # back from the card to where the keyboard was
        assert page.evaluate("document.activeElement.dataset.face") == "1"


def test_a_face_in_a_crowd_sized_photo_is_labelled_with_its_number_alone(browser, detector, astronaut, tmp_path):
    # One face about 2% of the photo's width: a label with its score would run into its neighbours'.
    wide = np.full((512, 4608, 3), 90, np.uint8)
    wide[:, :512] = astronaut
    with _page_of(browser, type(detector)(ScriptedClassifier([0.5]), detector.faces)) as page:
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "wide.jpg", wide)))
        page.wait_for_selector(".face-card")
        assert page.inner_text(".face-box-label") == "1"
        assert page.get_attribute(".face-box", "title") == "Face 1: 62.2% (face-swap score)"
        # Faces side by side closer than a label's width (an eighth of the photo) are numbered alone too;
        # the last of a row keeps its score, a face at the right edge its label inside the photo.
        crowded = (
            "async ([boxes, i, leftwards]) => { const { crowded } = await import('/static/js/image.js');"
            " const faces = boxes.map((box) => ({ box })); return crowded(faces[i], faces, 1000, leftwards); }"
        )
        row = [[100, 100, 180, 180], [200, 105, 280, 185], [600, 100, 680, 180], [200, 400, 280, 480]]
        assert [page.evaluate(crowded, [row, i, False]) for i in range(4)] == [True, False, False, False]
        assert page.evaluate(crowded, [[[100, 100, 140, 140]], 0, False])  # narrower than a twentieth
        # At the right edge a label runs leftwards, over the labels of the faces just left of it.
        edge = [[860, 100, 905, 180], [910, 100, 990, 180]]
        assert page.evaluate(crowded, [edge, 1, True]) and not page.evaluate(crowded, [edge[1:], 0, True])


def test_a_videos_sound_is_said_to_be_left_unanalysed(page, server, astronaut, tmp_path):
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    page.goto(server + "/")
    page.set_input_files("#file-input", str(write_video(tmp_path / "talk.mp4", [small] * 10, sound=True)))
    page.wait_for_selector("#timeline svg")
    assert "AUDIO\npresent, not analysed (faces only)" in page.inner_text("#video-facts")  # labels upper-cased by CSS
    page.set_input_files("#file-input", str(write_video(tmp_path / "mute.mp4", [small] * 10)))
    page.wait_for_function("() => document.getElementById('result-file').innerText.includes('mute.mp4')")
    assert "AUDIO" not in page.inner_text("#video-facts")


def test_a_video_read_at_a_reduced_scale_says_so_beside_its_resolution(browser, detector, astronaut, tmp_path):
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    limited = type(detector)(
        detector.classifier, detector.faces, video_limits=VideoLimits(max_pixels_per_frame=64 * 64)
    )
    with _page_of(browser, limited) as page:
        page.set_input_files("#file-input", str(write_video(tmp_path / "big.mp4", [small] * 10)))
        page.wait_for_selector("#timeline svg")
        assert "RESOLUTION\n128 × 128, read at 1/2 of its width and height\n" in page.inner_text(
            "#video-facts"
        )  # labels upper-cased by CSS


def test_a_portrait_phone_video_is_sized_as_it_plays(page, server, astronaut, tmp_path):
    stored = np.ascontiguousarray(np.rot90(cv2.resize(astronaut, (128, 224))))  # 224 x 128, stored sideways
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 224, 128, "yuv420p"
        stream.set_display_rotation(-90)  # played turned 90 degrees clockwise, as phones store portrait video
        for _ in range(6):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    page.goto(server + "/")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#timeline svg")
    assert "RESOLUTION\n128 × 224 (stored 224 × 128, turned 90°)\n" in page.inner_text("#video-facts")


def test_an_inconclusive_video_offers_more_frames(browser, detector, astronaut, tmp_path):
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    clip = write_video(tmp_path / "clip.mp4", [np.roll(small, i % 5, axis=1) for i in range(80)])  # 8 s, 80 frames
    score = detector.analyze_video(clip, frames=32).verdict.probability
    borderline = type(detector)(detector.classifier, detector.faces, threshold=score)  # 32 frames: inconclusive
    with _page_of(browser, borderline) as page:
        posts = _posts_of(page, page.url.rstrip("/"))
        page.set_input_files("#file-input", str(clip))
        page.wait_for_selector("[data-role=more-frames]:visible")
        assert page.inner_text("[data-role=more-frames]").startswith("Inconclusive on 32 frames: more may settle it.")
        page.click("[data-role=more-frames] button")
        page.wait_for_function("() => document.getElementById('video-facts').innerText.includes('64')")
        assert posts == ["/v1/jobs", "/v1/jobs?frames=64"]
        assert page.input_value("#frames-select") == "64"  # shown in the drop zone, for the next video too
        page.emulate_media(media="print")
        assert not page.is_visible("[data-role=more-frames]")


def test_a_video_whose_sound_starts_first_is_offered_no_frames_it_lacks(browser, detector, astronaut, tmp_path):
    # Times count from the file's start: a clip of 20 frames shown after 6 s of sound is 8 s long, and 8 s at
    # 10 fps read as 80 frames, so "Analyse again with 64 frames" was offered for the 20 it has (all sampled).
    from fractions import Fraction

    from tests.conftest import mux_silence

    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    clip = tmp_path / "late.mp4"
    with av.open(str(clip), "w") as container:
        picture = container.add_stream("libx264", rate=10)
        picture.width, picture.height, picture.pix_fmt = 128, 128, "yuv420p"
        picture.codec_context.time_base = picture.time_base = Fraction(1, 1000)
        sound = container.add_stream("aac", rate=16000)
        for index in range(20):
            frame = av.VideoFrame.from_ndarray(np.roll(small, index % 5, axis=1), format="rgb24")
            frame.pts, frame.time_base = 6000 + 100 * index, Fraction(1, 1000)
            for packet in picture.encode(frame):
                container.mux(packet)
        for packet in picture.encode():
            container.mux(packet)
        mux_silence(container, sound, round(16 * 8000 / 1024))
    analysed = detector.analyze_video(clip, frames=32)
    assert analysed.sampled_frames == 20 and analysed.video.duration_s == pytest.approx(8.0, abs=0.1)
    borderline = type(detector)(detector.classifier, detector.faces, threshold=analysed.verdict.probability)
    with _page_of(browser, borderline) as page:
        page.set_input_files("#file-input", str(clip))
        page.wait_for_selector("#timeline svg")
        assert "inconclusive" in page.inner_text("#verdict").lower()
        assert not page.is_visible("[data-role=more-frames]")
    # A part from the file's start: 0:00 to 0:07 holds the picture's first 10 frames, all sampled; its 7 s at
    # 10 fps were 70, capped at the video's 20, and 64 were offered for the same 10.
    part = detector.analyze_video(clip, frames=32, span=VideoSpan(0.0, 7.0))
    assert part.sampled_frames == 10
    borderline = type(detector)(detector.classifier, detector.faces, threshold=part.verdict.probability)
    with _page_of(browser, borderline) as page:
        page.fill("#span-start", "0")
        page.fill("#span-end", "7")
        page.set_input_files("#file-input", str(clip))
        page.wait_for_selector("#timeline svg")
        assert "inconclusive" in page.inner_text("#verdict").lower()
        assert "PART ANALYSED" in page.inner_text("#video-facts")
        assert not page.is_visible("[data-role=more-frames]")


def test_an_extreme_score_never_reads_as_certain(browser, detector, tiny_bundle, astronaut, tmp_path):
    from deepshield.inference.runtime import OnnxClassifier

    logit = float(detector.analyze_image(astronaut).faces[0].logit)
    certain = OnnxClassifier(tiny_bundle)
    certain.card.calibration.offset = logit + 20  # the face's probability: sigmoid(-20), 2e-9
    with _page_of(browser, type(detector)(certain, detector.faces)) as page:
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "photo.jpg", astronaut)))
        page.wait_for_selector(".face-card")
        assert page.inner_text(".face-card .face-meta").startswith("Face-swap score <0.1% ·")
        assert "face-swap score of a face: <0.1%;" in page.inner_text("#verdict")
        assert re.search(r"(?<![\d.])0\.0%|100\.0%", page.inner_text("#result")) is None  # 40.0% is fine


def test_a_two_output_model_shows_both_scores_and_which_drives(browser, astronaut, tmp_path):
    from deepshield.inference.analysis import Detector
    from tests.test_synthetic_score import export_two_output_bundle

    _, bundle = export_two_output_bundle(tmp_path / "two")
    detector = Detector.from_bundle(bundle)
    photo = _jpeg(tmp_path / "astronaut.jpg", astronaut)
    expected = detector.analyze_image(photo)
    with _page_of(browser, detector) as page:
        page.wait_for_selector("[data-role=synthetic-threshold]")
        assert page.inner_text("[data-role=synthetic-threshold]") == "Synthetic-face threshold 70.0%"
        band = detector.synthetic_rule.band  # its band beside it (it was only in a tooltip of some meters)
        assert page.inner_text("[data-role=synthetic-band]") == (
            f"Synthetic-face inconclusive {band.low * 100:.1f}%–{band.high * 100:.1f}%"
        )
        page.set_input_files("#file-input", str(photo))
        page.wait_for_selector(".face-card")
        face = expected.faces[0]
        drives = "synthetic-face score" if face.verdict_driver == "synthetic" else "face-swap score"
        words = {
            "likely_manipulated": "likely AI-generated",
            "inconclusive": "inconclusive",
            "no_signs_found": "no signs of AI generation",
        }
        line = page.inner_text(".face-card [data-role=synthetic-score]")
        assert (
            line
            == f"Synthetic-face score {shown_probability(face.synthetic_probability)} ({words[face.synthetic_label]}) "
            f"· the {drives} drives the verdict"
        )
        assert page.inner_text("[data-role=verdict-synthetic]").endswith(f"the {drives} drives the verdict")
        assert page.get_attribute("#verdict", "class") == f"verdict {expected.verdict.label}"
        assert "fully AI-generated" in page.inner_text("#verdict-scope")


def test_a_two_output_models_timeline_plots_either_score(browser, astronaut, tmp_path):
    from tests.test_synthetic_score import export_two_output_bundle

    _, bundle = export_two_output_bundle(tmp_path / "two")
    detector = Detector.from_bundle(bundle)
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    clip = write_video(tmp_path / "clip.mp4", [np.roll(small, i, axis=1) for i in range(10)])
    expected = detector.analyze_video(clip, frames=32)
    (track,) = expected.tracks
    driver = expected.verdict.verdict_driver
    with _page_of(browser, detector) as page:
        page.set_input_files("#file-input", str(clip))
        page.wait_for_selector("#timeline svg")
        assert page.is_visible("[data-role=timeline-score]")
        assert page.get_attribute("#timeline svg", "data-score") == driver  # the score that made the call
        for which in (driver, "synthetic" if driver == "manipulation" else "manipulation"):  # the verdict's score first
            page.click(f"[data-role=timeline-score] button[data-score={which}]")
            page.wait_for_selector(f"#timeline svg[data-score={which}]")
            wanted = [p.synthetic_probability if which == "synthetic" else p.probability for p in track.points]
            heights = page.eval_on_selector_all(
                "#timeline circle.point", "dots => dots.map((d) => +d.getAttribute('cy'))"
            )
            assert heights == pytest.approx([16 + 248 * (1 - p) for p in wanted], abs=0.01)  # T + plot height x (1 - p)
            title = "Synthetic-face score" if which == "synthetic" else "Face-swap score"
            assert page.inner_text("#timeline-title") == f"{title} over time, per person"
            assert (
                page.get_attribute(f"[data-role=timeline-score] button[data-score={which}]", "aria-pressed") == "true"
            )
        # The filmstrip frames the person's most suspicious frame by the score behind its call (a synthetic
        # call's strip was framed and scored by the face-swap score, its peak another frame than the card's).
        card = page.locator(".track-card").first
        card.locator("[data-role=filmstrip] summary").click()
        peak = card.locator("[data-role=filmstrip] figure.peak")
        measures = "synthetic-face score" if track.verdict_driver == "synthetic" else "face-swap score"
        assert peak.count() == 1 and f"frame {track.peak_frame_index}: {measures} " in peak.get_attribute("title")


def test_example_video_shows_progress_then_a_timeline(page, server, tmp_path):
    page.goto(server + "/")
    page.wait_for_selector("button.example[data-file$='.mp4']")
    # Record every progress value the bar shows while the job runs.
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const bar = document.getElementById('progress-bar');
            new MutationObserver(() => window.progressSeen.push(bar.getAttribute('aria-valuenow')))
                .observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
        }"""
    )
    example = "button.example[data-file='astronaut-pan.mp4']"
    assert page.inner_text(example + " .truth") == "Real"
    assert page.inner_text("button.example[data-file='astronaut-swap.jpg'] .truth") == "Manipulated"
    page.click(example)
    page.wait_for_selector("#timeline svg")
    assert not page.is_visible("[data-role=timeline-score]")  # one score to plot
    assert page.evaluate("window.progressSeen.length") >= 1  # the progress bar was shown and moved
    assert (
        page.locator("#timeline svg line.threshold").count() == 1
        and page.locator("#timeline svg rect.band").count() == 1
    )
    assert page.locator("#timeline svg circle").count() >= 10  # one point per sampled frame with the face
    assert page.inner_text("#result-file") == "Result for astronaut-pan.mp4"
    assert page.get_attribute(example, "class") == "example selected"
    # Beside the timeline, each face track: its most suspicious frame's face and heatmap, really loaded.
    card = page.locator(".track-card").first
    assert "Person 1" in card.inner_text() and "Seen in" in card.inner_text()
    assert card.locator("[data-role=counted]").inner_text() == "Counts towards the verdict"
    images = card.locator(".face-images img").all()
    assert len(images) == 2 and all(
        image.evaluate("img => img.complete && img.naturalWidth === 64") for image in images
    )
    # Every frame the face was seen in, folded under its card until opened, the most suspicious framed.
    strip = card.locator("[data-role=filmstrip]")
    assert not strip.locator("figure").first.is_visible()
    strip.locator("summary").click()
    frames = strip.locator("figure")
    seen = int(card.inner_text().split("Seen in ")[1].split(" ")[0])
    assert frames.count() == seen and strip.locator("summary").inner_text() == f"All {seen} frames of Person 1"
    assert strip.locator("figure.peak").count() >= 1
    assert frames.first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    # Hovering a point shows the face in that frame.
    page.hover("#timeline svg circle.point >> nth=3")
    page.wait_for_selector("#timeline-tip:not([hidden]) img")
    assert page.evaluate("document.querySelector('#timeline-tip img').naturalWidth") == 96
    assert "Person 1" in page.inner_text("#timeline-tip")
    # For the keyboard and screen readers: the chart is a group whose points are read out, one Tab stop a
    # face, arrow keys along its points, each named with its frame.
    assert page.get_attribute("#timeline svg", "role") == "group"
    tracks = page.locator("#timeline svg g[data-track]").count()
    assert page.locator("#timeline svg circle.point[tabindex='0']").count() == tracks
    page.focus("#timeline svg circle.point[tabindex='0']")
    first = page.evaluate("document.activeElement.getAttribute('aria-label')")
    page.keyboard.press("ArrowRight")
    second = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert first.startswith("Person 1 at ") and "(frame " in first and second != first
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == first
    assert page.get_attribute("#timeline svg circle.point[tabindex='0']", "role") == "img"  # a label needs a role
    page.wait_for_selector("#timeline-tip:not([hidden])")
    page.keyboard.press("Escape")  # the frame's face shown on focus can be dismissed (WCAG 1.4.13); focus stays
    assert (
        page.is_hidden("#timeline-tip") and page.evaluate("document.activeElement.getAttribute('aria-label')") == first
    )
    assert page.inner_text("#verdict-label").startswith(
        ("Likely manipulated", "Inconclusive", "No signs of face swapping found")
    )
    assert not page.is_visible("#progress")
    page.screenshot(path=str(tmp_path / "deepshield-video.png"), full_page=True)
    with page.expect_download() as saving:
        page.click("[data-role=download]")
    saved = json.loads(Path(saving.value.path()).read_text())
    assert saving.value.suggested_filename == "astronaut-pan.deepshield.json"
    assert saved["result"]["kind"] == "video" and len(saved["result"]["tracks"]) == page.locator(".track-card").count()
    # Another file: the example card is no longer highlighted.
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "mine.jpg", np.full((200, 300, 3), 170, np.uint8))))
    page.wait_for_selector("[data-role=no-face]")
    assert page.get_attribute(example, "class") == "example"
    assert page.problems == [] and page.outside == []


def test_an_example_still_loading_gives_way_to_a_file_chosen_meanwhile(page, server, astronaut, tmp_path):
    # On a slow line an example showed nothing while its file loaded, and arriving after the reader had chosen a
    # photo of their own, it was analysed and shown over that photo's result.
    held = []
    page.route("**/static/examples/*.mp4", lambda route: held.append(route))
    page.goto(server + "/")
    page.click("button.example[data-file='astronaut-pan.mp4']")
    page.wait_for_selector("#progress:not([hidden])")
    assert page.inner_text("#progress-stage") == "Loading the example…"
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "mine.jpg", astronaut)))
    page.wait_for_selector(".face-card")
    held[0].continue_()
    page.wait_for_timeout(1500)
    assert page.inner_text("#result-file") == "Result for mine.jpg" and page.is_hidden("#progress")
    assert page.is_hidden("#video-result")


def test_the_inconclusive_bands_label_keeps_off_the_threshold_line(page, server, tmp_path):
    page.goto(server + "/")
    page.click("button.example[data-file='astronaut-pan.mp4']")
    page.wait_for_selector("#timeline svg")
    with page.expect_download() as saving:
        page.click("[data-role=download]")
    saved = json.loads(Path(saving.value.path()).read_text())
    # The shipped band (threshold 55.6% in 50.0% to 57.4%) put the label across the line; a band with the
    # threshold at its foot, and a narrow one all round, too.
    for threshold, low, high in ((0.556, 0.5, 0.574), (0.52, 0.5, 0.7), (0.55, 0.54, 0.56)):
        saved["result"] |= {"threshold": threshold, "inconclusive": {"low": low, "high": high}}
        path = tmp_path / f"band-{low}-{high}.deepshield.json"
        path.write_text(json.dumps(saved))
        page.set_input_files("#file-input", str(path))
        page.wait_for_selector(f"[data-role=saved-note]:has-text('{path.name}')")
        label, line = (
            page.locator(f"#timeline svg {part}").bounding_box() for part in ("text.band-label", "line.threshold")
        )
        assert label["y"] + label["height"] <= line["y"] or label["y"] >= line["y"] + line["height"], (
            high,
            label,
            line,
        )
        # Drawn over the points, haloed (on a phone the first points lay over it).
        assert page.evaluate(
            "document.querySelector('#timeline svg').lastElementChild.classList.contains('band-label')"
        )


def test_api_docs_render_offline(page, server):
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    assert page.locator(".opblock").count() >= 5
    assert page.outside == []


def test_page_asks_for_the_api_key_when_the_server_needs_one(browser, detector, astronaut, tmp_path):
    with _page_of(browser, detector, ServerSettings(api_key="page-key")) as page:
        page.wait_for_selector("#api-key-panel:not([hidden])")
        assert page.is_hidden("#api-key-refused")
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
        page.wait_for_selector("#message:not([hidden])")  # in the page's words, not the API's header name
        assert page.inner_text("#message-detail") == "This server needs an API key: paste it in the box above."
        page.fill("#api-key-input", "not-the-key")
        page.click("#api-key-form button[type=submit]")
        page.wait_for_selector("#api-key-refused:not([hidden])")  # a wrong key is said to be wrong at once
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
        page.wait_for_selector("#message-detail:has-text('refused')")
        assert page.inner_text("#message-detail") == (
            "The server refused the API key this browser keeps: paste the right one in the box above."
        )
        page.fill("#api-key-input", "page-key")
        page.click("#api-key-form button[type=submit]")
        page.wait_for_selector("[data-role=model-name]")
        assert page.is_hidden("#api-key-panel") and page.is_hidden("#api-key-refused")
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
        page.wait_for_selector(".face-card")


def test_page_takes_what_the_server_owns_from_healthz(page, server, tmp_path):
    """Accepted formats, video suffixes, the minimum face size, the thresholds and bands verdicts are
    called with and job error statuses are the server's: served changed, the page shows and uses the
    changed values."""

    def changed_health(route):
        body = route.fetch().json()
        body["accepted"] = {
            "image_formats": ["PIXELFORMAT"],
            "video_formats": ["REELFORMAT"],
            "image_suffixes": ["pix"],
            "video_suffixes": ["reel"],
        }
        body["limits"]["min_face_px"] = 77
        body["scope"] = "This model judges SCOPEWORD only."
        body["terms"]["threshold"] = 0.77
        body["terms"]["calibrated"] = False  # a soup's: its verdicts are called with the defaults
        body["terms"]["inconclusive"] = {**body["terms"]["inconclusive"], "low": 0.5, "high": 0.88}
        body["job_error_statuses"] = {**body["job_error_statuses"], "corrupt_media": 499}
        route.fulfill(json=body)

    page.route("**/healthz", changed_health)
    posts = _posts_of(page, server)
    page.goto(server + "/")
    page.wait_for_selector("#limits:has-text('REELFORMAT')")
    assert page.inner_text("#limits").startswith("Photos: PIXELFORMAT · Videos: REELFORMAT · up to ")
    assert page.get_attribute("#file-input", "accept") == "image/*,video/*,.pix,.reel,.json"
    assert page.inner_text("#footer-scope") == "This model judges SCOPEWORD only."
    page.wait_for_selector("[data-role=band]")
    assert page.inner_text("[data-role=threshold]") == "Face-swap threshold 77.0%"
    assert page.inner_text("[data-role=band]") == "Face-swap inconclusive 50.0%–88.0%"
    assert page.inner_text("[data-role=not-calibrated]") == "Face-swap scores not calibrated"

    page.set_input_files("#file-input", str(_jpeg(tmp_path / "wall.jpg", np.full((200, 300, 3), 170, np.uint8))))
    page.wait_for_selector("[data-role=no-face]")

    # A file without a MIME type is taken for a video by the served suffixes: it goes to /v1/jobs. The
    # job fails with a code and no detail: the page names the status the server gave that code.
    failed_job = {"id": "j", "status": "failed", "error": {"error": "corrupt_media", "detail": ""}}
    page.route("**/v1/jobs", lambda route: route.fulfill(status=202, json=failed_job))
    clip = tmp_path / "clip.reel"  # a suffix without a MIME type: the browser gives the file none
    clip.write_bytes(bytes(4000))
    page.set_input_files("#file-input", str(clip))
    page.wait_for_selector("#message:not([hidden])")
    assert posts == ["/v1/analyze?preview=true", "/v1/jobs"]
    assert page.inner_text("#message-detail") == "Error 499."
    assert page.problems == []


def test_keyboard_and_screen_reader_users_keep_their_place_as_a_photo_is_analysed(
    browser, detector, astronaut, tmp_path
):
    held = copy.copy(detector)  # each photo's analysis waits to be let through
    releases: queue.Queue[threading.Event] = queue.Queue()

    def held_image(*args, **kwargs):
        release = threading.Event()
        releases.put(release)
        release.wait(30)
        return detector.analyze_image(*args, **kwargs)

    held.analyze_image = held_image
    photo = _jpeg(tmp_path / "astronaut.jpg", astronaut)
    with _page_of(browser, held) as page:
        # What the progress panel's status says while it is shown: a screen reader reads out those writes only.
        page.evaluate(
            """() => { window.stageWrites = []; const stage = document.getElementById('progress-stage');
            new MutationObserver(() => { if (!document.getElementById('progress').hidden && stage.textContent)
              window.stageWrites.push(stage.textContent); }).observe(stage, { childList: true, characterData: true, subtree: true }); }"""
        )
        for turn in range(2):
            page.set_input_files("#file-input", str(photo))
            release = releases.get(timeout=30)
            page.focus("[data-role=cancel]")  # a keyboard user waits on Cancel
            release.set()
            page.wait_for_selector(".face-card")
            # Cancel went with the progress panel: focus went to the page's body, and Tab began at its top.
            assert page.evaluate("document.activeElement.id") == "result-file", turn
            # The second photo's stage was the first's: it was never written, so never read out.
            assert page.evaluate("window.stageWrites") == ["Uploading and analysing…"] * (turn + 1)


def test_on_a_phone_a_list_shows_its_file_names_whole(browser, detector, astronaut, tmp_path):
    notes = tmp_path / "meeting notes from the newsroom.jpg"
    notes.write_text("these are my notes, not a photo")
    with _page_of(browser, detector) as page:
        page.set_viewport_size({"width": 375, "height": 740})
        page.set_input_files("#file-input", [str(_jpeg(tmp_path / "astronaut.jpg", astronaut)), str(notes)])
        page.wait_for_selector("#batch-summary:has-text('could not be')")
        names = page.eval_on_selector_all(
            "[data-role=batch-row] .file-name",
            "nodes => nodes.map((n) => [n.textContent, n.scrollWidth, n.clientWidth])",
        )
        # Beside the score and the error, they were cut to "astr…" and "n.".
        assert [name for name, _, _ in names] == ["astronaut.jpg", notes.name]
        assert all(scrolled <= shown for _, scrolled, shown in names), names
        assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_the_page_works_behind_a_proxy_under_a_path_prefix(browser, detector, astronaut, tmp_path):
    # A newsroom's proxy serving it at https://tools.example/shield/: the page asked for /static/... and
    # /v1/..., the proxy's own paths, and never loaded.
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    app = create_app(detector, ServerSettings())
    outer = Starlette(routes=[Route("/healthz", lambda request: PlainTextResponse("ok")), Mount("/shield", app=app)])
    requested: list[str] = []
    try:
        with live_server(outer) as base_url:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", lambda request: requested.append(request.url.removeprefix(base_url)))
            page.goto(base_url + "/shield/")
            page.wait_for_selector("[data-role=model-name]")
            page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
            page.wait_for_selector(".face-card")
            docs = context.new_page()
            docs.goto(base_url + "/shield/docs")
            docs.wait_for_selector(".swagger-ui .info")  # the API's schema loaded, from under the prefix
            context.close()
    finally:
        app.state.runtime.close()  # a mounted app's lifespan is not run
    assert [url for url in requested if not url.startswith("/shield/")] == []
    assert "/shield/v1/analyze?preview=true" in requested


def test_several_files_are_analysed_in_turn_and_listed_with_their_verdicts(page, server, astronaut, tmp_path):
    page.goto(server + "/")
    page.wait_for_selector("[data-role=model-name]")
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are my notes, not a photo")
    files = [
        _jpeg(tmp_path / "astronaut.jpg", astronaut),
        _jpeg(tmp_path / "wall.jpg", np.full((200, 300, 3), 170, np.uint8)),
        bad,
    ]
    page.set_input_files("#file-input", [str(path) for path in files])
    page.wait_for_selector("#batch-summary:has-text('could not be')")
    rows = page.locator("[data-role=batch-row]")
    assert rows.count() == 3
    assert [rows.nth(i).get_attribute("data-status") for i in range(3)] == ["done", "done", "failed"]
    assert rows.nth(1).locator(".label").inner_text() == "NO FACE"
    # The file that could not be read is not counted as analysed, and its row says why.
    assert "NOT ANALYSED" in rows.nth(2).inner_text().upper()
    assert rows.nth(2).locator("[data-role=batch-error]").inner_text().startswith("unsupported file type")
    name = rows.nth(2).locator(".file-name").bounding_box()  # a long reason never hides whose it is
    assert name is not None and name["width"] >= 60
    summary = page.inner_text("#batch-summary")
    assert summary.startswith("2 of 3 files analysed (") and summary.endswith(", 1 no face); 1 could not be analysed")
    # All of them can be saved at once, the failed file with its reason.
    with page.expect_download() as saving:
        page.click("[data-role=batch-download]")
    saved = json.loads(Path(saving.value.path()).read_text())
    assert saving.value.suggested_filename == "deepshield-results.json"
    assert [entry["file_name"] for entry in saved] == ["astronaut.jpg", "wall.jpg", "notes.jpg"]
    assert saved[0]["result"]["kind"] == "image" and saved[1]["result"]["verdict"]["label"] == "no_face"
    assert saved[2]["result"] is None and saved[2]["error"].startswith("unsupported file type")
    # And the list as a spreadsheet, the columns of `deepshield scan --format csv` a result here has.
    with page.expect_download() as saving:
        page.click("[data-role=batch-table]")
    assert saving.value.suggested_filename == "deepshield-results.csv"
    table = list(csv.DictReader(io.StringIO(Path(saving.value.path()).read_text())))
    assert [(row["file_name"], row["status"], row["verdict"], row["faces"]) for row in table] == [
        ("astronaut.jpg", "ok", saved[0]["result"]["verdict"]["label"], "1"),
        ("wall.jpg", "ok", "no_face", "0"),
        ("notes.jpg", "error", "", ""),
    ]
    assert float(table[0]["probability"]) == saved[0]["result"]["verdict"]["probability"]
    assert table[0]["sha256"] == saved[0]["file"]["sha256"] and table[2]["error"] == saved[2]["error"]
    # scan's CSV columns, in its order (a file's name for its path; no time taken, which the page does not see)
    from deepshield.cli.scan import SUMMARY_FIELDS

    assert list(table[0]) == ["file_name", *(name for name in SUMMARY_FIELDS[1:] if name != "elapsed_ms")]
    assert table[0]["part"] == ""  # a video's part, as scan's CSV says it
    # The latest finished file is shown: the bad file's own message, named after it.
    assert page.inner_text("#message-title") == "notes.jpg:" and not page.is_visible("#result")
    assert rows.nth(2).get_attribute("aria-current") == "true"
    # Picking a row (by keyboard here) shows that file's result, scores as listed, and the row keeps the
    # focus though the list is drawn again (it went to the page's top).
    rows.nth(0).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(".face-card")
    assert page.evaluate("document.activeElement.dataset.role") == "batch-row"
    assert page.evaluate("[...document.querySelectorAll('[data-role=batch-row]')].indexOf(document.activeElement)") == 0
    assert page.inner_text("#result-file") == "Result for astronaut.jpg" and not page.is_visible("#message")
    listed = rows.nth(0).locator(".batch-score").inner_text()
    assert listed and page.inner_text("#verdict-score").startswith(listed)
    assert rows.nth(0).get_attribute("aria-current") == "true" and rows.nth(2).get_attribute("aria-current") is None
    # Picking the failed file shows its message above the list: the row clicked stays under the pointer
    # (every row moved down by the message's height, the pointer then over another file's row).
    before = rows.nth(2).bounding_box()["y"]
    rows.nth(2).click()
    page.wait_for_selector("#message:visible")
    assert abs(rows.nth(2).bounding_box()["y"] - before) <= 2
    # One file again: the list goes.
    page.set_input_files("#file-input", str(files[1]))
    page.wait_for_selector("[data-role=no-face]")
    assert not page.is_visible("#batch")
    # A file that cannot be read before others: said in the status (its row says why), not as an alert that
    # flashed for a moment as the next file started.
    page.evaluate(
        """() => { window.seen = { alerts: 0, said: [] };
          new MutationObserver(() => { if (!document.getElementById('message').hidden) window.seen.alerts += 1; })
            .observe(document.getElementById('message'), { attributes: true, attributeFilter: ['hidden'] });
          new MutationObserver(() => { const said = document.getElementById('announce').textContent;
            if (said) window.seen.said.push(said); })  // emptied with the result it spoke of: nothing said
            .observe(document.getElementById('announce'), { childList: true, characterData: true, subtree: true }); }"""
    )
    page.set_input_files("#file-input", [str(bad), str(files[0])])
    page.wait_for_selector("#batch-summary:has-text('1 of 2 files analysed')")
    page.wait_for_selector(".face-card")
    seen = page.evaluate("window.seen")
    assert seen["alerts"] == 0 and seen["said"][0].startswith("notes.jpg: not analysed: "), seen
    assert page.problems == [] and page.outside == []


def test_the_frames_a_video_job_samples_can_be_raised_up_to_the_servers_maximum(page, server):
    posts = _posts_of(page, server)
    page.goto(server + "/")
    page.wait_for_selector("#frames-choice:not([hidden])")
    options = page.locator("[data-role=frames] option")
    assert [options.nth(i).inner_text() for i in range(options.count())] == [
        "32 (default)",
        "64 (about 2x the time)",
        "128 (about 4x the time)",
    ]
    page.select_option("[data-role=frames]", "64")
    assert not page.is_visible("#result")  # choosing did not start anything (nor open the file dialog)
    page.click("button.example[data-file='astronaut-pan.mp4']")
    page.wait_for_selector("#timeline svg")
    assert posts == ["/v1/jobs?frames=64"]
    assert page.problems == [] and page.outside == []


def test_a_part_of_a_video_can_be_analysed(page, server):
    posts = _posts_of(page, server)
    page.goto(server + "/")
    page.wait_for_selector("#span-choice:not([hidden])")
    example = "button.example[data-file='astronaut-pan.mp4']"  # 2.4 s
    # Times the CLI refuses are refused before anything is uploaded, in the CLI's words
    # (deepshield.media.units.parse_clock_time); typing in the fields opens no file dialog.
    for start, end in [("1:75", ""), ("-3", ""), ("1::2", ""), ("0:02", "1"), ("", "0")]:
        page.fill("#span-start", start)
        page.fill("#span-end", end)
        try:
            parse_clock_time(start or "0")  # an empty start is the video's start
            expected = "The part of the video to analyse must end after it starts."
        except ValueError as exc:
            expected = str(exc)
        page.click(example)
        page.wait_for_function(
            "(expected) => { const m = document.getElementById('message'); return !m.hidden && m.innerText.includes(expected); }",
            arg=expected,
            timeout=5000,
        )
    assert posts == []
    page.fill("#span-start", "0:00.8")
    page.fill("#span-end", "1.6")
    page.click(example)
    page.wait_for_selector("#timeline svg")
    assert posts == ["/v1/jobs?start_s=0.8&end_s=1.6"]
    facts = page.inner_text("#video-facts")  # labels are upper-cased by CSS
    assert "PART ANALYSED\n0:00.8 to 0:01.6\n" in facts  # as the verdict's reason says it
    assert page.inner_text("#verdict-reason").endswith("only 0:00.8 to 0:01.6 of the video was analysed.")
    ticks = page.locator("#timeline svg text.tick").all_text_contents()
    assert "1.0 s" in ticks and "0.0 s" not in ticks  # the axis covers the part, not the whole video
    assert page.problems == [] and page.outside == []


def test_files_are_chosen_with_the_keyboard_from_a_drop_zone_that_is_a_region(page, server):
    page.goto(server + "/")
    page.wait_for_selector("[data-role=model-name]")
    zone = page.locator("#dropzone")
    assert zone.get_attribute("role") == "region" and zone.get_attribute("tabindex") is None  # not a button of buttons
    assert page.evaluate("document.getElementById(document.getElementById('dropzone').getAttribute('aria-labelledby'))"
                         ".innerText") == "Drop photos or videos here"  # fmt: skip
    # The dialog's opening is counted (a native dialog may not open in a headless browser without a display).
    page.evaluate(
        "() => { window.opened = 0; document.getElementById('file-input').click = () => { window.opened += 1; }; }"
    )
    page.focus("#choose-button")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.opened === 1")
    page.focus("#span-start")  # typing a part of the video opens nothing
    page.keyboard.type("1:00")
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert page.input_value("#span-start") == "1:00" and page.evaluate("window.opened") == 1


def test_no_face_in_a_part_of_a_video_says_which_part(page, server, tmp_path):
    blank = write_video(tmp_path / "wall.mp4", [np.full((128, 128, 3), 90 + i, np.uint8) for i in range(20)])
    page.goto(server + "/")
    page.wait_for_selector("#span-choice:not([hidden])")
    page.fill("#span-start", "0.5")
    page.fill("#span-end", "1")
    page.set_input_files("#file-input", str(blank))
    page.wait_for_selector("#verdict-label:not(:empty)")
    reason = page.inner_text("#verdict-reason")
    assert reason.startswith("No face found in any of the ") and "faces narrower than about 100 px" in reason
    assert reason.endswith(
        "only 0:00.5 to 0:01 of the video was analysed. Try a sharper file, or one where faces are larger and turned towards the camera."
    )


def test_a_poll_answered_after_cancel_does_not_bring_the_progress_back(browser, detector, astronaut, tmp_path):
    # The answer of a poll already on its way when Cancel was pressed said "running": the progress bar came
    # back under the "cancelled" message, for good, with no Cancel button and nothing running.
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    held = []

    def hold_the_first_poll(route) -> None:
        if route.request.method == "GET" and not held:
            held.append((route, route.fetch()))  # answered by the server, not yet passed on to the page
        else:
            route.continue_()

    with _page_of(browser, detector) as page:
        page.route("**/v1/jobs/*", hold_the_first_poll)
        page.set_input_files("#file-input", str(clip))
        while not held:
            page.wait_for_timeout(50)
        page.click("[data-role=cancel]")
        route, response = held[0]
        route.fulfill(response=response)
        page.wait_for_timeout(1500)
        assert not page.is_visible("#progress")
        assert page.inner_text("#message-detail").startswith("The analysis was cancelled")


@pytest.mark.parametrize("comes_back_with_the_job", [True, False])
def test_a_video_job_waits_out_a_server_restart(browser, detector, astronaut, tmp_path, comes_back_with_the_job):
    # A server restarted with a state folder runs the job it stopped again: the page gave up at the first poll
    # that found no server ("Could not reach the server"), and the result made after the restart was lost.
    # One restarted without a state folder has forgotten the job: its 404 says so, not "no job 'x7Q…'".
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    polls = []

    def server_away_for_two_polls(route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        polls.append(route.request.url)
        if len(polls) <= 2:
            route.abort("connectionrefused")
        elif comes_back_with_the_job:
            route.continue_()
        else:
            route.fulfill(status=404, json={"error": "job_not_found", "detail": "no job 'x': unknown, deleted"})

    with _page_of(browser, detector) as page:
        page.route("**/v1/jobs/*", server_away_for_two_polls)
        page.clock.install()  # the page's waits between polls of a server away (1.2 s, 2.4 s): jumped over
        page.set_input_files("#file-input", str(clip))
        page.wait_for_function("() => document.getElementById('progress-stage').textContent.includes('not answering')")
        assert page.is_visible("[data-role=cancel]")
        # The second poll: it finds no server either, and the next is 2.4 s after it.
        _jump_over_a_retry(page, polls, 2, 1200, 2400)
        if comes_back_with_the_job:
            page.wait_for_selector("#video-result:not([hidden])")
            assert page.is_hidden("#message") and page.is_hidden("#progress")
        else:
            page.wait_for_selector("#message:not([hidden])")
            assert "restarted and lost this analysis" in page.inner_text("#message-detail")


def test_a_video_jobs_poll_answered_busy_waits_as_the_server_asks_and_says_it_is_busy(
    browser, detector, astronaut, tmp_path
):
    # The server's own 503 was taken for a server gone: "not answering", asked again every 600 ms whatever its
    # Retry-After said, and given up after 2 minutes.
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    polled: list[float] = []

    def busy_for_two_polls(route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        polled.append(time.monotonic())
        if len(polled) <= 2:
            busy = {"error": "busy", "detail": "the server is busy (4 jobs waiting); retry later"}
            route.fulfill(status=503, json=busy, headers={"Retry-After": "2"})
        else:
            route.continue_()

    with _page_of(browser, detector) as page:
        page.route("**/v1/jobs/*", busy_for_two_polls)
        page.set_input_files("#file-input", str(clip))
        page.wait_for_function("() => document.getElementById('progress-stage').textContent.includes('busy')")
        assert page.inner_text("#progress-stage") == "The server is busy: asking again in 2 s…"
        page.wait_for_selector("#video-result:not([hidden])")
        assert page.is_hidden("#message")
    assert polled[1] - polled[0] >= 1.9 and polled[2] - polled[1] >= 1.9  # not 0.6 s apart


@pytest.mark.parametrize("retry_after", ["1", None])
def test_a_video_jobs_poll_that_finds_the_server_away_asks_again_less_and_less_often(
    browser, detector, astronaut, tmp_path, retry_after
):
    # A 503 "shutting_down" (its Retry-After: 10) and a server not answering were both asked every 600 ms for two
    # minutes: now when it says, else after a wait that doubles.
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    polled: list[float] = []

    def away_for_three_polls(route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        polled.append(time.monotonic())
        if len(polled) > 3:
            route.continue_()
        elif retry_after is None:
            route.abort("connectionrefused")
        else:
            going = {"error": "shutting_down", "detail": "the server is shutting down"}
            route.fulfill(status=503, json=going, headers={"Retry-After": retry_after})

    with _page_of(browser, detector) as page:
        page.route("**/v1/jobs/*", away_for_three_polls)
        page.set_input_files("#file-input", str(clip))
        page.wait_for_selector("#video-result:not([hidden])", timeout=30_000)
        assert page.is_hidden("#message")
    gaps = np.diff(polled[:4])
    if retry_after is None:
        assert gaps[1] >= 1.15 and gaps[2] >= 2.3  # 0.6 s, 1.2 s, then 2.4 s: not 0.6 s each
    else:
        assert all(gap >= 0.9 for gap in gaps)  # as the server asked: not 0.6 s apart


def test_cancel_while_the_server_is_not_answering_does_not_say_it_deleted_the_file(
    browser, detector, astronaut, tmp_path
):
    # Its job's DELETE cannot reach the server, which, restarted with its state folder, analyses the file anyway:
    # "the server has deleted the file" was untrue.
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    with _page_of(browser, detector) as page:
        page.route("**/v1/jobs/*", lambda route: route.abort("connectionrefused"))
        page.set_input_files("#file-input", str(clip))
        page.wait_for_function("() => document.getElementById('progress-stage').textContent.includes('not answering')")
        page.click("[data-role=cancel]")
        assert page.inner_text("#message-detail") == (
            "The analysis was cancelled; the server is not answering, so the file may still be analysed there if it"
            " comes back."
        )


def test_a_video_job_left_for_another_page_and_shown_again_by_back_says_it_was_cancelled(
    browser, server, astronaut, tmp_path
):
    # Leaving the page (a bookmark, a link in another app) cancels its job; the browser keeps the page and Back shows it
    # again, its poll loop going on: it polled the deleted job, to say "No job 'x7Q…': unknown, deleted, …".
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    polled = []

    def running_until_deleted(route) -> None:
        polled.append(route.request.url)
        response = route.fetch()
        if route.request.method != "GET" or response.status != 200:
            route.fulfill(response=response)
            return
        job = response.json()
        route.fulfill(response=response, json={**job, "status": "running", "stage": "scoring faces", "result": None})

    # Playwright's Chromium keeps no page for Back unless asked to.
    keeping = browser.browser_type.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, ignore_default_args=["--disable-back-forward-cache"]
    )
    try:
        page = keeping.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server + "/")
        page.route("**/v1/jobs/*", running_until_deleted)
        page.set_input_files("#file-input", str(clip))
        page.wait_for_function("() => document.getElementById('progress-stage').textContent === 'Scoring faces…'")
        page.evaluate("window.kept = true")
        page.goto(server + "/docs")
        page.go_back(wait_until="commit")
        assert page.evaluate("window.kept === true")  # the same page, not loaded again
        page.wait_for_timeout(1500)  # a poll or two
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(polled[0])  # the job is gone from the server
        assert page.is_hidden("#progress")
        assert page.inner_text("#message-detail") == (
            "The analysis was cancelled as the page was left, and the server has deleted the file."
        )
    finally:
        keeping.close()


def test_an_answer_that_is_not_the_servers_is_said_so_and_nothing_is_sent_again(page, server, astronaut, tmp_path):
    # A proxy's sign-in page (200, HTML) in place of the answer: the photo was uploaded again as a job, and the
    # page said "Something went wrong in this page: Cannot read properties of null (reading 'id')".
    posts = _posts_of(page, server)
    page.route("**/v1/analyze*", lambda route: route.fulfill(status=200, content_type="text/html", body="<p>Sign in"))
    page.goto(server + "/")
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "photo.jpg", astronaut)))
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message-detail").startswith("The server's answer was not Deepfake Shield's")
    assert posts == ["/v1/analyze?preview=true"]


def test_a_picture_dragged_from_a_web_page_is_said_to_need_saving_first(page, server):
    # Dragged from another site, a picture comes as its address, no file: the drop did nothing, without a word.
    page.goto(server + "/")
    dragged = page.evaluate_handle(
        "() => { const data = new DataTransfer(); data.setData('text/uri-list', 'https://example.org/a.jpg'); return data; }"
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dragged})
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message-detail").startswith("Nothing to analyse was dropped: drop a file")


def test_the_pages_links_elsewhere_open_in_a_new_tab(page, server):
    # The footer's REST API and model card links were followed in the page's own tab: a video being analysed was
    # cancelled, a result shown was gone. Only the brand's link (this page itself) stays.
    page.goto(server + "/")
    links = page.eval_on_selector_all("a[href]:not(.brand)", "links => links.map((a) => [a.textContent, a.target])")
    assert links and all(target == "_blank" for _, target in links), links


def test_a_file_left_while_its_answer_was_on_its_way_is_not_sent_again_as_a_job(browser, detector, astronaut, tmp_path):
    # A video with no telling name or type goes to /v1/analyze first, whose 415 "video_needs_job" sends it
    # as a job: arriving after another file was chosen, it uploaded the old file again and left its
    # progress on screen over the new result.
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    held = []

    def hold_the_first_analysis(route) -> None:
        if not held:
            held.append(route)
        else:
            route.continue_()

    with _page_of(browser, detector) as page:
        server = page.url.rsplit("/", 1)[0]
        posts = _posts_of(page, server)
        page.route("**/v1/analyze*", hold_the_first_analysis)
        page.set_input_files("#file-input", {"name": "holiday-clip", "mimeType": "", "buffer": clip.read_bytes()})
        while not held:
            page.wait_for_timeout(50)
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "photo.jpg", astronaut)))
        page.wait_for_selector(".face-card")
        held[0].fulfill(
            status=415, json={"error": "video_needs_job", "detail": "a video is analysed as a job: POST /v1/jobs"}
        )
        page.wait_for_timeout(1000)
        assert not page.is_visible("#progress") and page.is_visible(".face-card")
        assert not [post for post in posts if post.startswith("/v1/jobs")]


def test_a_video_job_is_cancelled_by_its_button_or_by_choosing_another_file(browser, detector, astronaut, tmp_path):
    held = copy.copy(detector)  # its video analyses wait to be let through, one release event each
    releases: queue.Queue[threading.Event] = queue.Queue()

    def held_video(path, frames=32, progress=None, **options):
        release = threading.Event()
        releases.put(release)
        release.wait(30)
        return detector.analyze_video(path, frames=frames, progress=progress, **options)

    held.analyze_video = held_video
    clip = write_video(tmp_path / "clip.mp4", [np.roll(astronaut, 4 * i, axis=1) for i in range(6)])
    with _page_of(browser, held) as page:
        missing: list[str] = []  # the page never asks for a job it has deleted
        page.on("response", lambda response: missing.append(response.url) if response.status == 404 else None)
        with page.expect_request(lambda request: request.method == "GET" and "/v1/jobs/" in request.url):
            page.set_input_files("#file-input", str(clip))  # polled: the page knows its job
        first = releases.get(timeout=30)  # the job is running
        # For screen readers: the bar is named by the file and its stage, the stage is a status, and the
        # Cancel button is in no live region (it was read out with every poll).
        assert page.get_attribute("#progress-bar", "aria-labelledby") == "progress-file progress-stage"
        assert page.get_attribute("#progress-stage", "role") == "status"
        assert page.evaluate("document.getElementById('progress-cancel').closest('[aria-live]')") is None
        with page.expect_request(lambda request: request.method == "DELETE") as deleting:
            page.focus("[data-role=cancel]")
            page.keyboard.press("Enter")
        page.wait_for_selector("#message:visible")
        assert page.inner_text("#message-detail") == "The analysis was cancelled, and the server has deleted the file."
        assert page.evaluate("document.activeElement.id") == "message"  # not the page's top (the button went)
        assert not page.is_visible("#progress") and not page.is_visible("#result")
        page.wait_for_timeout(1500)  # past the next poll it would have made (every 0.6 s)
        assert missing == []
        job_url = deleting.value.url
        assert "/v1/jobs/" in job_url
        assert page.evaluate("(url) => fetch(url).then((r) => r.status)", job_url) == 404  # forgotten there
        first.set()  # the cancelled analysis stops at its first progress report, freeing the worker
        page.set_input_files("#file-input", str(clip))
        second = releases.get(timeout=30)
        with page.expect_request(lambda request: request.method == "DELETE") as deleting:
            page.set_input_files("#file-input", str(_jpeg(tmp_path / "photo.jpg", astronaut)))  # chosen instead
        assert deleting.value.url.startswith(job_url.rsplit("/", 1)[0]) and deleting.value.url != job_url
        page.wait_for_selector(".face-card")
        assert not page.is_visible("[data-role=cancel]")
        second.set()
        # A page reloaded (or left) mid-job stops waiting too: the job ran on for nobody
        made: list[str] = []
        page.on("response", lambda r: made.append(r.headers["location"]) if r.request.method == "POST" else None)
        page.set_input_files("#file-input", str(clip))
        third = releases.get(timeout=30)
        while not made:
            page.wait_for_timeout(50)
        job_url = page.url.rsplit("/", 1)[0] + made[-1]
        page.reload()
        third.set()
        status = "(url) => fetch(url).then((r) => r.status)"
        for _ in range(50):
            if page.evaluate(status, job_url) == 404:
                break
            page.wait_for_timeout(100)
        assert page.evaluate(status, job_url) == 404


def _jump_over_a_retry(page, seen: list, count: int, wait_ms: int, next_wait_ms: int) -> None:
    """On the page's installed clock: jump over its wait to a retry, see the retry made (`seen` reaches `count`,
    up to 10 s), let its failure be taken in and the next retry's timer set, then jump over that one too."""
    page.clock.fast_forward(wait_ms)
    for _ in range(200):
        if len(seen) >= count:
            break
        page.wait_for_timeout(50)
    page.wait_for_timeout(100)
    page.clock.fast_forward(next_wait_ms)


@contextlib.contextmanager
def _slow_upload_page(browser, app) -> Iterator:
    """A page of `app` served live whose uploads go at 200 KB/s (a 3 MB file takes 15 s)."""
    with live_server(app) as base_url:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 200_000},
        )
        try:
            page.goto(base_url + "/")
            yield page
        finally:
            context.close()


def _upload_reaches_the_server(runtime) -> None:
    deadline = time.monotonic() + 10
    while not any(runtime.upload_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(runtime.upload_dir.iterdir()), "the upload never reached the server"


def _upload_is_gone(runtime) -> None:
    deadline = time.monotonic() + 5  # not the 15 s the rest of the upload would take
    while any(runtime.upload_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(runtime.upload_dir.iterdir())  # the part received is deleted


def _cancel_a_slow_upload(page, runtime, path: Path) -> None:
    """Choose `path` on a _slow_upload_page, press Cancel once it reaches the server: its part is deleted."""
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("[data-role=cancel]:visible")
    _upload_reaches_the_server(runtime)
    # How far the upload is is not known: a moving bar, not one at 0% for the minutes a large video takes.
    bar = page.locator("#progress-bar")
    assert "indeterminate" in bar.get_attribute("class") and bar.get_attribute("aria-valuenow") is None
    page.click("[data-role=cancel]")
    page.wait_for_selector("#message:visible")
    _upload_is_gone(runtime)


def test_cancel_during_a_slow_upload_stops_it_and_leaves_nothing_on_the_server(browser, detector, tmp_path):
    app = create_app(detector, ServerSettings())
    runtime = app.state.runtime
    big = tmp_path / "long.mp4"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes())
    with _slow_upload_page(browser, app) as page:
        _cancel_a_slow_upload(page, runtime, big)
        assert len(runtime.jobs) == 0  # and no job was made of it


def test_a_photos_slow_upload_can_be_cancelled_and_is_stopped_by_the_next_file(browser, detector, astronaut, tmp_path):
    # A photo's upload offered no Cancel, and choosing another photo left it uploading beside the new one,
    # to be analysed for nobody.
    app = create_app(detector, ServerSettings())
    runtime = app.state.runtime
    big = tmp_path / "large.jpg"
    big.write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes())
    with _slow_upload_page(browser, app) as page:
        _cancel_a_slow_upload(page, runtime, big)
        page.set_input_files("#file-input", str(big))
        _upload_reaches_the_server(runtime)
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "photo.jpg", astronaut)))  # 40 KB: 0.2 s
        page.wait_for_selector(".face-card")
        _upload_is_gone(runtime)  # the large photo's upload stopped, not left to go on for 15 s


def test_a_face_can_be_looked_at_closer_around_its_most_suspicious_frame(page, server, astronaut, tmp_path):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    clip = write_video(tmp_path / "long.mp4", [np.roll(small, i, axis=1) for i in range(100)])  # 10 s at 10 fps
    posts = _posts_of(page, server)
    page.goto(server + "/")
    page.set_input_files("#file-input", str(clip))
    page.wait_for_selector("[data-role=look-closer]")
    page.emulate_media(media="print")
    assert not page.is_visible("[data-role=look-closer]")  # a control, not part of the report
    page.emulate_media(media="screen")
    page.click("[data-role=look-closer]")
    page.wait_for_function("() => document.getElementById('video-facts').innerText.includes('PART ANALYSED')")
    assert posts[0] == "/v1/jobs" and posts[1].startswith("/v1/jobs?start_s=")
    query = dict(part.split("=") for part in posts[1].split("?")[1].split("&"))
    start, end = float(query["start_s"]), float(query["end_s"])
    assert 0 <= start < end <= 10.0 and end - start <= 4.2  # the peak's seconds either side, within the video
    assert (page.input_value("#span-start"), page.input_value("#span-end")) == ("", "")  # the next file: whole
    assert page.locator("[data-role=look-closer]").count() == 0  # 4 s of 4 s: nothing closer to offer
    # Within a list of files, looking closer keeps the list (it was dropped, with its saved results).
    page.set_input_files("#file-input", [str(clip), str(_jpeg(tmp_path / "photo.jpg", astronaut))])
    page.wait_for_selector("#batch-summary:has-text('2 of 2 files analysed')")
    page.locator("[data-role=batch-row]").nth(0).click()
    page.click("[data-role=look-closer]")
    page.wait_for_function("() => document.getElementById('video-facts').innerText.includes('PART ANALYSED')")
    assert page.is_visible("#batch") and page.locator("[data-role=batch-row]").count() == 2
    assert page.problems == [] and page.outside == []


def test_an_animated_gif_gets_a_timeline(page, server, astronaut, tmp_path):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    frames = [Image.fromarray(np.roll(small, 3 * i, axis=1)) for i in range(8)]
    gif = tmp_path / "reaction.gif"
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=150, loop=0)
    posts = _posts_of(page, server)
    page.goto(server + "/")
    page.set_input_files("#file-input", str(gif))  # image/gif: uploaded once, to a job
    page.wait_for_selector("#timeline svg circle.point")
    assert "CODEC\ngif" in page.inner_text("#video-facts")
    assert page.locator("#timeline svg circle.point").count() == 8
    assert posts == ["/v1/jobs"]
    # A still GIF goes the same way and comes back as a photo's result, the photo shown.
    frames[0].save(tmp_path / "still.gif", "GIF")
    page.set_input_files("#file-input", str(tmp_path / "still.gif"))
    page.wait_for_selector(".face-card")
    assert page.evaluate("document.getElementById('photo').naturalWidth") == 256
    assert posts == ["/v1/jobs", "/v1/jobs"]
    # An MPEG-TS, which Chromium types as a Qt translation file, goes straight to a job too.
    clip = write_video(tmp_path / "clip.mp4", [np.roll(small, 3 * i, axis=1) for i in range(4)])
    page.set_input_files(
        "#file-input", {"name": "clip.ts", "mimeType": "text/vnd.trolltech.linguist", "buffer": clip.read_bytes()}
    )
    page.wait_for_selector("#timeline svg circle.point")
    assert posts == ["/v1/jobs", "/v1/jobs", "/v1/jobs"]
    # Animated WebP and APNG say so in their first bytes: one upload, to a job; a still one goes to
    # /v1/analyze (they went there first and, refused as videos, were uploaded again).
    for name, form, animated in (("a.webp", "WEBP", True), ("a.png", "PNG", True), ("s.webp", "WEBP", False)):
        frames[0].save(tmp_path / name, form, save_all=animated, append_images=frames[1:4] if animated else [])
        posts.clear()
        page.set_input_files("#file-input", str(tmp_path / name))
        page.wait_for_selector(f"#result-file:has-text('{name}')")
        assert page.is_visible("#timeline svg circle.point" if animated else ".face-card"), name
        assert posts == (["/v1/jobs"] if animated else ["/v1/analyze?preview=true"]), name
    assert page.problems == [] and page.outside == []


def test_a_saved_result_opens_again_as_it_was_saved(page, server, astronaut, tmp_path):
    posts = _posts_of(page, server)
    page.goto(server + "/")
    page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
    page.wait_for_selector(".face-card")
    shown = (page.inner_text("#verdict-label"), page.inner_text("#verdict-score"), page.inner_text(".face-card"))
    with page.expect_download() as saving:
        page.click("[data-role=download]")
    saved_path = tmp_path / "astronaut.deepshield.json"
    saving.value.save_as(saved_path)
    saved = json.loads(saved_path.read_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", saved["analysed_at"])
    # Opened on a fresh page: the same result, said to be a saved one, and nothing sent to the server.
    page.goto(server + "/")
    page.set_input_files("#file-input", str(saved_path))
    page.wait_for_selector(".face-card")
    assert (
        page.inner_text("#verdict-label"),
        page.inner_text("#verdict-score"),
        page.inner_text(".face-card"),
    ) == shown
    when = saved["analysed_at"][:16].replace("T", " ") + " UTC"
    assert page.inner_text("[data-role=saved-note]") == (
        f"Opened from astronaut.deepshield.json: the result as it was saved, analysed {when}. Nothing was analysed again."
    )
    assert when in page.inner_text("[data-role=print-header]")  # the report keeps the analysis time
    # A photo read at a reduced scale says so among its facts.
    reduced = copy.deepcopy(saved)
    reduced["result"] |= {"width": 256, "height": 256, "decoded_scale": 2}
    reduced_path = tmp_path / "big.deepshield.json"
    reduced_path.write_text(json.dumps(reduced))
    page.set_input_files("#file-input", str(reduced_path))
    page.wait_for_selector("[data-role=saved-note]:has-text('big.deepshield.json')")
    page.click("#file-details summary")
    names = [name.lower() for name in page.locator("#file-facts dt").all_inner_texts()]
    facts = dict(zip(names, page.locator("#file-facts dd").all_inner_texts()))
    assert facts["pixels analysed"] == "256 × 256: 1/2 of the file's width and height (it is above the pixel limit)"
    assert posts == ["/v1/analyze?preview=true"]
    # A saved set of results opens as its list; any other JSON is named as not a result.
    results = tmp_path / "deepshield-results.json"
    generated = copy.deepcopy(saved)  # as a two-output model calls a generated face: by its synthetic score
    generated["file_name"] = "generated.jpg"
    called = {"label": "likely_manipulated", "verdict_driver": "synthetic", "synthetic_probability": 0.8}
    generated["result"]["verdict"] |= called
    generated["result"]["faces"][0] |= called | {"synthetic_label": "likely_manipulated"}
    band = generated["result"]["inconclusive"] | {"low": 0.211, "high": 0.694}
    generated["result"] |= {"synthetic_threshold": 0.597, "synthetic_inconclusive": band}
    results.write_text(
        json.dumps([saved, {"file_name": "notes.jpg", "result": None, "error": "unsupported file type"}, generated])
    )
    page.set_input_files("#file-input", str(results))
    page.wait_for_selector("#batch-summary:has-text('2 of 3 files analysed')")
    assert "1 likely ai-generated" in page.inner_text("#batch-summary")  # counted apart from the face swaps
    assert page.inner_text("#result-file") == "Result for astronaut.jpg" and page.is_visible("[data-role=saved-note]")
    rows = page.locator("[data-role=batch-row]")
    assert [rows.nth(i).get_attribute("aria-current") for i in range(3)] == ["true", None, None]
    # each row shows the score that made its verdict, named when it is the synthetic-face score
    scores = [rows.nth(i).locator("[data-role=batch-score]").inner_text() for i in (0, 2)]
    assert scores == [shown[1].split("%")[0] + "%", "80% AI"]
    assert rows.nth(2).locator(".label").inner_text() == "LIKELY AI-GENERATED"
    rows.nth(
        2
    ).click()  # its result: the synthetic score leads wherever the call is shown, the face-swap score beside it
    page.wait_for_selector("#result-file:has-text('generated.jpg')")
    face_swap = generated["result"]["faces"][0]["probability"]
    assert page.inner_text("#verdict-score").startswith(
        "80%\nsynthetic-face score: probability the face is AI-generated"
    )
    assert page.inner_text("[data-role=verdict-synthetic]") == (
        f"Face-swap score {shown_probability(face_swap)} · the synthetic-face score drives the verdict"
    )
    assert page.inner_text(".face-card .label") == "LIKELY AI-GENERATED"
    score = page.locator("[data-role=face-score]")
    assert score.inner_text().startswith("80%") and score.locator("small").inner_text() == "AI-generated"
    assert page.inner_text(".face-box-label") == "1 · 80% AI"
    # The card's meter shows that same score against its own threshold and band, not the face-swap score.
    meter = page.locator(".face-card [data-role=meter]")
    assert meter.get_attribute("title") == ("80% AI-generated score; inconclusive from 21.1% to 69.4%, threshold 59.7%")
    assert meter.locator("[data-role=meter-fill]").evaluate("n => n.style.width") == "80%"
    assert meter.locator(".meter-band").evaluate("n => [n.style.left, n.style.width]") == ["21.1%", "48.3%"]
    # Colours place a score by its own band: 26% is inside the synthetic band (amber), below the face-swap one.
    colour = (
        "async ([p, low, high]) => (await import('/static/js/format.js')).scoreColour(p, {inconclusive: {low, high}})"
    )
    assert page.evaluate(colour, [0.26, 0.211, 0.694]) == "hsl(47, 68%, 28%)"  # was hsl(70): olive, read as green
    assert page.evaluate(colour, [0.26, 0.5, 0.57]) == "hsl(102, 68%, 28%)"
    assert page.evaluate(colour, [0.8, 0.211, 0.694]) == "hsl(16, 68%, 28%)"
    # the three calls' hues never meet: green ones 85 and up, amber 36 to 48, red 25 and down
    hues = [int(re.findall(r"\d+", page.evaluate(colour, [p, 0.211, 0.694]))[0]) for p in (0.2, 0.211, 0.694, 0.695)]
    assert hues[0] >= 85 and 36 <= hues[1] <= 48 and 36 <= hues[2] <= 48 and hues[3] <= 25
    # White label text on every colour, and each colour as text on white, is readable (WCAG AA, 4.5:1).
    for p in np.linspace(0, 1, 21):
        hue = int(re.fullmatch(r"hsl\((\d+), 68%, 28%\)", page.evaluate(colour, [float(p), 0.5, 0.57]))[1])
        assert _contrast_with_white(colorsys.hls_to_rgb(hue / 360, 0.28, 0.68)) >= 4.5, hue
    assert page.inner_text(".face-card .face-meta").startswith(f"Face-swap score {shown_probability(face_swap)} ·")
    scanned = tmp_path / "scan.json"  # deepshield scan --format json: named for what it is
    scanned.write_text(json.dumps([{"path": "a.jpg", "status": "ok", "kind": "image", "verdict": "no_signs_found"}]))
    page.set_input_files("#file-input", str(scanned))
    page.wait_for_selector("#message-detail:has-text('output of deepshield scan')")
    other = tmp_path / "settings.json"
    other.write_text('{"theme": "dark"}')
    page.set_input_files("#file-input", str(other))
    page.wait_for_selector("#message:not([hidden])")
    assert "This JSON file is not a result saved by Deepfake Shield." in page.inner_text("#message")
    assert not page.is_visible("#batch") and not page.is_visible("#result")
    assert posts == ["/v1/analyze?preview=true"] and page.problems == [] and page.outside == []


def test_a_saved_result_among_several_files_is_not_sent_to_the_server(page, server):
    # Dropped with other files, a saved result was uploaded with them, its faces and all, to be refused as an
    # unsupported file type: the drop zone says such a file opens again as it was saved.
    posts = _posts_of(page, server)
    page.goto(server + "/")
    saved = json.dumps({"file_name": "a.jpg", "result": None, "error": "x"}).encode()
    page.set_input_files(
        "#file-input",
        [{"name": name, "mimeType": "application/json", "buffer": saved} for name in ("a.json", "b.deepshield.json")],
    )
    page.wait_for_selector("#batch-download:not([hidden])")
    assert not posts
    errors = page.locator("[data-role=batch-error]").all_inner_texts()
    assert errors == ["A result saved from this page opens on its own: drop or choose it by itself."] * 2


def test_focus_is_outlined_and_less_motion_is_honoured(page, server):
    page.goto(server + "/")
    page.wait_for_selector("button.example")
    page.focus("button.example")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focused from the keyboard: :focus-visible
    outline = page.evaluate(
        "getComputedStyle(document.activeElement).outlineStyle + ' ' + getComputedStyle(document.activeElement).outlineWidth"
    )
    assert outline == "solid 2px"  # it was a 1 px border colour change, like "selected", and gone in forced colours
    # Named once: its title and its tag both said "Real photo".
    assert (
        page.get_attribute("button.example[data-file='astronaut-real.jpg']", "aria-label")
        == "Real photo: an example photo, real"
    )
    page.emulate_media(reduced_motion="reduce")
    page.evaluate("document.getElementById('progress-bar').classList.add('indeterminate')")
    assert page.evaluate("getComputedStyle(document.getElementById('progress-fill')).animationName") == "none"


def test_each_persons_line_has_its_own_dash_which_its_card_repeats(page, server, astronaut, tmp_path):
    small = cv2.resize(astronaut, (192, 192), interpolation=cv2.INTER_AREA)
    clip = write_video(tmp_path / "two.mp4", [np.hstack([np.roll(small, i, axis=1), small]) for i in range(6)])
    page.goto(server + "/")
    page.set_input_files("#file-input", str(clip))
    page.wait_for_selector("#timeline svg polyline.track", state="attached")
    # Told apart by colour alone, two people's lines were one to a colour-blind reader.
    lines = page.eval_on_selector_all(
        "#timeline svg g[data-track]",
        "groups => groups.map((g) => [g.dataset.track, g.querySelector('polyline').getAttribute('stroke-dasharray')])",
    )
    assert len(lines) == 2 and lines[0][1] != lines[1][1]
    for track, dash in lines:
        swatch = page.locator(f".track-card[data-track='{track}'] .swatch line")
        assert swatch.get_attribute("stroke-dasharray") == dash


def _drawn_parts(page, selector: str) -> tuple[np.ndarray, np.ndarray]:
    """The mean colours of the left and right fifths of an element as drawn (inside its edges)."""
    shot = np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB"), float)
    inner = shot[2:-2, 2:-2]
    fifth = inner.shape[1] // 5
    return inner[:, :fifth].mean(axis=(0, 1)), inner[:, -fifth:].mean(axis=(0, 1))


def test_in_forced_colours_the_progress_bar_and_score_meters_keep_their_fill(browser, server, astronaut, tmp_path):
    # Windows high contrast paints every background the page's one colour: the bar's fill vanished with its
    # track, and how far a video's analysis had gone was shown nowhere else (the stage says what, not how far).
    context = browser.new_context(viewport={"width": 1000, "height": 900}, forced_colors="active")
    try:
        page = context.new_page()
        page.goto(server + "/")
        assert page.evaluate("matchMedia('(forced-colors: active)').matches")
        page.evaluate(
            "async () => { const { showProgress } = await import('/static/js/messages.js');"
            " showProgress('clip.mp4', 0.6, 'Analysing frames…'); }"
        )
        page.wait_for_function(  # grown to its width (a 0.3 s transition)
            "() => document.getElementById('progress-fill').offsetWidth >= 0.59 * "
            "document.getElementById('progress-bar').clientWidth"
        )
        done, left = _drawn_parts(page, "#progress-bar")
        assert np.abs(done - left).max() > 60, (done, left)
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "astronaut.jpg", astronaut)))
        page.wait_for_selector(".face-card")
        page.eval_on_selector("[data-role=meter-fill]", "fill => { fill.style.width = '60%'; }")  # a fill to see
        scored, rest = _drawn_parts(page, "[data-role=meter]")
        assert np.abs(scored - rest).max() > 60, (scored, rest)
    finally:
        context.close()


def _drawn_contrast(page, selector: str) -> float:
    """WCAG contrast between an element's darkest drawn pixel (its text) and its commonest (its background)."""
    shot = np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB"), float) / 255
    pixels = shot.reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    lightness = [_luminance(tuple(colour)) for colour in colours]
    text, background = min(lightness), lightness[int(counts.argmax())]
    return (max(text, background) + 0.05) / (min(text, background) + 0.05)


def test_a_person_who_does_not_count_is_told_in_readable_text(page, server, astronaut, tmp_path):
    # A second face in one frame of six is tracked but left out of the verdict. Its card was drawn at 80%
    # opacity as a whole: its words (why it does not count among them) fell to 3.7:1, under WCAG AA's 4.5:1.
    small = cv2.resize(astronaut, (192, 192), interpolation=cv2.INTER_AREA)
    blank = np.full_like(small, 128)
    frames = [np.hstack([small, small if i == 0 else blank]) for i in range(6)]
    page.goto(server + "/")
    page.set_input_files("#file-input", str(write_video(tmp_path / "passer-by.mp4", frames)))
    page.wait_for_selector(".track-card.uncounted")
    assert page.inner_text(".track-card.uncounted [data-role=counted]").startswith("Does not count towards the verdict")
    for line in ("[data-role=counted]", ".face-meta >> nth=0", ".track-title"):
        ratio = _drawn_contrast(page, f".track-card.uncounted {line}")
        assert ratio >= 4.5, (line, ratio)


def test_looking_closer_from_the_keyboard_leaves_it_on_cancel(page, server, astronaut, tmp_path):
    # Look closer goes with the result it sits in: the keyboard's place went to the page's body, and Tab
    # went on to the footer, past the progress and its Cancel.
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    clip = write_video(tmp_path / "long.mp4", [np.roll(small, i, axis=1) for i in range(100)])  # 10 s at 10 fps
    held = []
    page.route(
        "**/v1/jobs?*", lambda route: held.append(route) if route.request.method == "POST" else route.continue_()
    )
    page.goto(server + "/")
    page.set_input_files("#file-input", str(clip))
    page.wait_for_selector("[data-role=look-closer]")
    page.focus("[data-role=look-closer]")
    page.keyboard.press("Enter")
    while not held:  # its upload on its way: Cancel offered
        page.wait_for_timeout(50)
    assert page.evaluate("document.activeElement.id") == "progress-cancel"
    held[0].continue_()
    page.wait_for_function("() => document.getElementById('video-facts').innerText.includes('PART ANALYSED')")
    assert page.evaluate("document.activeElement.id") == "result-file"  # Cancel went: the result's heading
    assert page.problems == []


def test_each_face_and_person_card_is_headed_for_a_screen_readers_heading_keys(browser, detector, astronaut, tmp_path):
    # "Face 2" and "Person 1" were bold text: a screen reader's heading keys went from the result's heading
    # past every card, and a photo of five faces was read through card by card to reach the fourth.
    with _page_of(browser, detector) as page:
        page.set_input_files("#file-input", str(_jpeg(tmp_path / "two.jpg", np.concatenate([astronaut] * 2, axis=1))))
        page.wait_for_selector(".face-card")
        headings = page.get_by_role("heading", level=3)
        assert sorted(headings.all_inner_texts()) == ["Face 1", "Face 2"]
        # Within its card, beside its badge, as before.
        title, badge = page.locator(".face-card .face-title").first, page.locator(".face-card .label").first
        assert abs(title.bounding_box()["y"] - badge.bounding_box()["y"]) < 12
        page.click("button.example[data-file='astronaut-pan.mp4']")
        page.wait_for_selector(".track-card")
        names = page.get_by_role("heading", level=3).all_inner_texts()
        assert names[0] == "Face-swap score over time, per person" and names[1:] == ["Person 1"]


def test_the_same_files_call_is_read_out_again_when_it_is_analysed_again(page, server, astronaut, tmp_path):
    # The call goes to a polite status, read out when its words change: a file analysed again (more frames,
    # a second look) to the same call left them as they were, and its end was never read out.
    photo = _jpeg(tmp_path / "astronaut.jpg", astronaut)
    page.goto(server + "/")
    page.evaluate(
        """() => { window.announced = []; const status = document.getElementById('announce'); let last = '';
        new MutationObserver(() => { if (status.textContent !== last) { last = status.textContent;
          if (last) window.announced.push(last); } }).observe(status, { childList: true, characterData: true, subtree: true }); }"""
    )
    for _ in range(2):
        page.set_input_files("#file-input", str(photo))
        page.wait_for_selector(".face-card:not([data-seen])")
        page.eval_on_selector(".face-card", "card => { card.dataset.seen = 'yes'; }")  # the next one is new
    said = page.evaluate("window.announced")
    assert len(said) == 2 and said[0] == said[1] and said[0].startswith("astronaut.jpg: "), said


def test_a_healthz_not_had_at_start_is_asked_again_quietly(page, server, astronaut, tmp_path):
    """/healthz failed at start (a proxy's 502 as the server restarted): the page never asked again, so the
    limits stayed unknown (an oversized file went up whole to be refused) and the frame and part choices hidden
    until a reload. It asks again after a wait, and before the next analysis, without a word over a result."""
    failing = [1]  # the answers to fail, from the start
    asked: list[str] = []

    def health(route):
        asked.append("failed" if failing[0] else "answered")
        if failing[0]:
            failing[0] -= 1
            route.fulfill(status=502, content_type="text/html", body="<h1>502 Bad Gateway</h1>")
        else:
            body = route.fetch().json()
            body["limits"]["max_upload_bytes"] = 20_000
            route.fulfill(json=body)

    page.route("**/healthz", health)
    posts = _posts_of(page, server)
    page.clock.install()  # the page's waits before it asks again (2 s, then 4 s): jumped over, not waited out
    page.goto(server + "/")
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message-detail") == "The server answered 502 Bad Gateway."
    assert page.is_hidden("#frames-choice")
    # Answered a little later: the start's error goes, the choices and limits come
    page.clock.fast_forward(2000)
    page.wait_for_selector("#frames-choice:not([hidden])", timeout=10_000)
    assert page.is_hidden("#message") and "up to 20 KB" in page.inner_text("#limits")
    assert asked == ["failed", "answered"]

    failing[0] = 3  # the start's, the analysis', a later quiet try's
    asked.clear()
    page.reload()
    page.wait_for_selector("#message:not([hidden])")
    photo = _jpeg(tmp_path / "astronaut.jpg", astronaut)
    assert photo.stat().st_size > 20_000
    page.set_input_files("#file-input", str(photo))  # the limits unknown yet: it goes, and is analysed
    page.wait_for_selector(".face-card")
    _jump_over_a_retry(page, asked, 3, 2000, 4000)  # the later quiet try: it fails, and the next is 4 s after it
    page.wait_for_selector("#frames-choice:not([hidden])", timeout=15_000)
    assert asked == ["failed", "failed", "failed", "answered"]
    assert page.is_hidden("#message") and page.is_visible(".face-card")  # no error over the result
    # Known now: a file over the limit is refused before it is uploaded
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("#message:not([hidden])")
    assert "this server accepts files up to 20 KB" in page.inner_text("#message-detail")
    assert posts == ["/v1/analyze?preview=true"]
    assert page.problems == []
