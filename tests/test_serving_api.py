"""REST API: every route, every error status, the API key, jobs from submission to result, limits, temp files."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import http.client
import io
import logging
import math
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from deepshield.errors import CorruptMediaError, DeepShieldError, MediaTooLargeError, UnsupportedMediaError
from deepshield.inference.analysis import Detector
from deepshield.inference.results import scope
from deepshield.inference.runtime import OnnxClassifier
from deepshield.media.images import ImageLimits
from deepshield.media.provenance import TrustAnchors
from deepshield.media.sniff import IMAGE_FORMATS, VIDEO_FORMATS
from deepshield.media.suffixes import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from deepshield.media.video import VideoLimits
from deepshield.serving.app import create_app
from deepshield.serving.errors import ApiError, from_library_error, internal_error
from deepshield.serving.settings import ServerSettings
from tests.conftest import bundle_with_record, photo_with_exif
from tests.provenance_support import signing_identity, with_credentials
from tests.serving_support import live_server


# ------------------------------------------------------------------------------------------ helpers
def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def astronaut_jpeg(astronaut) -> bytes:
    return encode(astronaut)


def upload(data: bytes, name: str = "photo.jpg", mime: str = "image/jpeg") -> dict:
    return {"file": (name, data, mime)}


class HookedDetector:
    """The real detector, with a hook run at the start of every analysis (to block or crash on purpose)."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.hook = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _run_hook(self) -> None:
        if self.hook is not None:
            self.hook()

    def analyze_image(self, *args, **kwargs):
        self._run_hook()
        return self.inner.analyze_image(*args, **kwargs)

    def analyze_video(self, *args, **kwargs):
        self._run_hook()
        return self.inner.analyze_video(*args, **kwargs)


@contextlib.contextmanager
def client_for(detector, **settings) -> TestClient:
    app = create_app(detector, ServerSettings(**settings))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def client(detector):
    with client_for(detector) as client:
        yield client


def upload_files(client: TestClient) -> list:
    return sorted(client.app.state.runtime.upload_dir.iterdir())


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["detail"] and body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["error"] == code, body
    return body


def wait_for_job(client: TestClient, job_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s")


def png_size(url: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))).size


# ------------------------------------------------------------------------------------------ routes
def test_healthz_and_model_card(client, detector):
    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["model"] == "tiny-test 0.0.1" and body["api_key_required"] is False
    assert body["limits"]["max_upload_bytes"] == ServerSettings().max_upload_bytes
    card = client.get("/v1/model")
    assert card.status_code == 200
    assert card.json()["name"] == "tiny-test" and card.json()["input_size"] == 64
    assert card.json()["calibration"]["threshold"] == detector.threshold
    # The tiny bundle's card has no fitted band: the loader gives the documented default.
    band = card.json()["calibration"]["inconclusive"]
    assert (band["low"], band["high"]) == pytest.approx((detector.threshold - 0.1, detector.threshold + 0.1))
    assert band["fitted_on"].startswith("default for a card without a fitted band")


def test_the_models_record_on_real_media_is_served(detector, tiny_bundle, tmp_path):
    with client_for(Detector.from_bundle(bundle_with_record(tiny_bundle, tmp_path / "bundle"))) as client:
        record = client.get("/v1/model/record").json()
    assert record == {
        "benchmarks": [
            {
                "labelled_set": "dev-eval/modern-swaps",  # a set the card has no figures for is left out
                "file_auc": {"value": 0.604, "low": 0.426, "high": 0.742},
                "face_auc": {"value": 0.733, "low": None, "high": None},
                "real_flagged": 0.0456,
                "synthetic_real_flagged": None,
                "real_files": 22,
                "fake_files": 24,
                "caution": None,  # 10 files of each class or more
            },
            {
                "labelled_set": "dev-eval/dfdc-sample",
                "file_auc": {"value": 1.0, "low": 1.0, "high": 1.0},
                "face_auc": {"value": 0.9981, "low": None, "high": None},
                "real_flagged": None,
                "synthetic_real_flagged": None,
                "real_files": 1,
                "fake_files": 3,
                "caution": "only 1 real and 3 fake files: a bootstrap over so few files understates the uncertainty "
                "(an interval can shrink to a point)",
            },
        ],
        "validation_auc": 0.93,
        "validation_fakes": "synthesised fakes",
        "validation_real_flagged": 0.009,
        "synthetic_holdout_auc": None,  # a model without the synthetic-face score
        "synthetic_real_flagged": None,
    }
    with client_for(detector) as client:
        assert client.get("/v1/model/record").json()["benchmarks"] == []
    # A card from before file counts were recorded (the shipped 1.2.2): a one-point interval is cautioned.
    from deepshield.models.card import ModelCard

    card = ModelCard.model_validate_json(
        (bundle_with_record(tiny_bundle, tmp_path / "old") / "model_card.json").read_text()
    )
    for kind in ("real", "fake"):
        for set_key in ("modern_swaps", "dfdc_sample"):
            del card.metrics[f"bench_{set_key}_{kind}_files"]
    swaps, dfdc = card.record().benchmarks
    assert swaps.caution is None and dfdc.caution.startswith("its interval is a single point")


def test_analyze_image_gives_faces_with_crops_and_heatmaps(client, astronaut_jpeg):
    response = client.post("/v1/analyze", files=upload(astronaut_jpeg))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["kind"] == "image" and (result["width"], result["height"], result["decoded_scale"]) == (512, 512, 1)
    assert len(result["faces"]) == 1
    face = result["faces"][0]
    # The tiny model scores every face about 0.51: inside the band of 0.4 to 0.6 around its threshold.
    assert (result["inconclusive"]["low"], result["inconclusive"]["high"]) == (0.4, 0.6)
    assert 0.4 <= face["probability"] < 0.6 and face["label"] == "inconclusive"
    assert face["threshold_label"] == ("fake" if face["probability"] >= result["threshold"] else "real")
    assert png_size(face["crop_png"]) == (64, 64)
    assert png_size(face["heatmap_png"]) == (64, 64)
    assert result["verdict"]["label"] == face["label"]
    assert result["scope"].startswith("Deepfake Shield judges face swaps and face edits only")
    assert result["file"] == {
        "name": "photo.jpg",
        "size_bytes": len(astronaut_jpeg),
        "sha256": hashlib.sha256(astronaut_jpeg).hexdigest(),
        "kind": "image",
    }
    assert result["preview_jpeg"] is None
    with_preview = client.post("/v1/analyze?preview=true", files=upload(astronaut_jpeg)).json()
    assert with_preview["preview_jpeg"].startswith("data:image/jpeg;base64,")
    assert upload_files(client) == []  # uploads are deleted once answered


def png_pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_a_faces_crop_and_heatmap_lie_on_the_picture_where_the_api_documents_them(client, astronaut):
    """A client places crop_png and heatmap_png on the picture from what the API says of them: the square
    crop_policy.scale (GET /v1/model) times the box's longer side, centred on the box (in the pixels read),
    turned turned_deg counter-clockwise to be upright, black past the picture's edge. A sideways photo whose
    face runs off its edge: the square is turned and padded."""
    picture = np.ascontiguousarray(np.rot90(astronaut[:, 170:], 1))
    result = client.post("/v1/analyze", files=upload(encode(picture, "PNG"), "photo.png", "image/png")).json()
    (face,) = result["faces"]
    policy = client.get("/v1/model").json()["crop_policy"]
    x0, y0, x1, y1 = face["box"]
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)

    def square(turned_deg: float) -> np.ndarray:
        matrix = cv2.getRotationMatrix2D(centre, turned_deg, policy["size"] / (policy["scale"] * max(x1 - x0, y1 - y0)))
        matrix[:, 2] += (policy["size"] / 2 - centre[0], policy["size"] / 2 - centre[1])
        return cv2.warpAffine(picture, matrix, (policy["size"], policy["size"]), flags=cv2.INTER_LINEAR)

    crop = png_pixels(face["crop_png"]).astype(np.float64)
    assert face["turned_deg"] in (90, 270) and (crop.max(axis=2) == 0).mean() > 0.02  # turned, and padded
    # blurred: the crop shrinks a large face by area first, this bilinear warp does not (aliasing apart)
    off = {turn: np.abs(cv2.blur(crop, (3, 3)) - cv2.blur(square(turn), (3, 3))).mean() for turn in (0, 90, 180, 270)}
    assert off[face["turned_deg"]] < 6 and all(
        off[turn] > 10 * off[face["turned_deg"]] for turn in off if turn != face["turned_deg"]
    )
    assert png_pixels(face["heatmap_png"]).shape == crop.shape  # over the same square, pixel for pixel
    # ... and the schema says so, where a client reads it.
    fields = client.get("/openapi.json").json()["components"]["schemas"]["FaceView"]["properties"]
    assert "decoded_scale" in fields["box"]["description"]
    for name in ("crop_png", "heatmap_png"):
        assert all(term in fields[name]["description"] for term in ("crop_policy.scale", "turned_deg", "GET /v1/model"))


def test_api_json_is_the_python_results_json_plus_images_and_file(client, detector, astronaut_jpeg):
    """What the README promises: .model_dump_json() of a result is the API's JSON without the data URLs and file info."""
    api = client.post("/v1/analyze", files=upload(astronaut_jpeg)).json()
    local = detector.analyze_image(astronaut_jpeg).model_dump(mode="json")
    added = {"file", "preview_jpeg"}
    assert set(api) == set(local) | added
    for name in set(local) - {"faces", "elapsed_ms"}:
        assert api[name] == local[name], name
    assert [{k: v for k, v in f.items() if k not in ("crop_png", "heatmap_png")} for f in api["faces"]] == local[
        "faces"
    ]


@pytest.mark.parametrize(
    ("probability", "threshold", "label"),
    [
        (0.40, 0.40, "inconclusive"),
        (0.10, 0.40, "no_signs_found"),
        (0.70, 0.40, "likely_manipulated"),
        # Under a band set high (70% to 90% around 80%), a score the model rates at even odds or
        # above is never "no signs found": the band reaches down to 50%.
        (0.55, 0.80, "inconclusive"),
        (0.45, 0.80, "no_signs_found"),
    ],
)
def test_api_verdict_is_three_way_around_the_band(detector, tiny_bundle, astronaut_jpeg, probability, threshold, label):
    """A score at the threshold is inconclusive; well below the band the wording claims no authenticity."""
    classifier = OnnxClassifier(tiny_bundle)
    calibration = classifier.card.calibration
    logit = float(detector.analyze_image(astronaut_jpeg).faces[0].logit)
    calibration.offset = logit - calibration.temperature * math.log(probability / (1 - probability))
    with client_for(Detector(classifier, detector.faces, threshold=threshold)) as borderline:
        result = borderline.post("/v1/analyze", files=upload(astronaut_jpeg)).json()
    verdict = result["verdict"]
    assert verdict["probability"] == pytest.approx(probability, abs=1e-4)
    assert verdict["label"] == label == result["faces"][0]["label"]
    assert (result["inconclusive"]["low"], result["inconclusive"]["high"]) == pytest.approx(
        (min(0.5, max(0, threshold - 0.1)), min(1, threshold + 0.1))
    )
    if label == "no_signs_found":
        assert verdict["headline"] == (
            "No signs of face swapping found — this does not prove the file is authentic: "
            "the model misses many face edits and many newer face swaps"
        )
    if label == "inconclusive":
        assert verdict["headline"].startswith("Inconclusive")
    assert verdict["threshold_label"] == ("fake" if probability >= threshold else "real")


def test_analyze_accepts_png_whatever_its_name(client, astronaut):
    response = client.post("/v1/analyze", files=upload(encode(astronaut, "PNG"), name="holiday.mp4", mime="video/mp4"))
    assert response.status_code == 200 and len(response.json()["faces"]) == 1


def test_a_file_name_beyond_ascii_sent_as_rfc_6266_is_kept(client, astronaut_jpeg):
    # filename*=UTF-8''... (curl's and many clients' way for such names) was dropped: every one was "upload".
    for disposition, shown in (
        ("filename=\"cafe.jpg\"; filename*=UTF-8''caf%C3%A9%20%E6%97%A5.jpg", "caf\u00e9 \u65e5.jpg"),
        ("filename*=iso-8859-1''caf%E9.jpg", "caf\u00e9.jpg"),
        ('filename="plain.jpg"', "plain.jpg"),
        # a charset Python cannot decode leniently: the plain name (the upload was a 400 "malformed multipart")
        ("filename=\"idna.jpg\"; filename*=idna''abc.jpg", "idna.jpg"),
    ):
        head = f'--B\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n\r\n'.encode()
        body = head + astronaut_jpeg + b"\r\n--B--\r\n"
        response = client.post("/v1/analyze", content=body, headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert response.status_code == 200 and response.json()["file"]["name"] == shown, disposition


def test_a_file_name_with_quotes_is_shown_back_as_the_file_has_it(client, astronaut_jpeg):
    # Browsers (the page's uploads), curl and httpx send a name's " as %22: it was shown back so.
    head = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="O\'Brien %22interview%22 \xc3\xa4.jpg"\r\n\r\n'
    )
    body = head + astronaut_jpeg + b"\r\n--B--\r\n"
    response = client.post("/v1/analyze", content=body, headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert response.status_code == 200 and response.json()["file"]["name"] == 'O\'Brien "interview" \u00e4.jpg'
    response = client.post("/v1/jobs", files=upload(astronaut_jpeg, name='<img src=x>"new"\nline.jpg'))
    assert response.status_code == 202 and response.json()["file"]["name"] == '<img src=x>"new"line.jpg'
    assert wait_for_job(client, response.json()["id"])["file"]["name"] == '<img src=x>"new"line.jpg'


@pytest.mark.parametrize(("fmt", "name", "mime"), [("HEIF", "IMG_0001.HEIC", ""), ("AVIF", "photo.avif", "image/avif")])
def test_phone_photos_heic_and_avif_are_analysed_with_a_jpeg_preview(client, astronaut, fmt, name, mime):
    response = client.post("/v1/analyze?preview=true", files=upload(encode(astronaut, fmt), name=name, mime=mime))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "image" and len(body["faces"]) == 1
    assert body["preview_jpeg"].startswith("data:image/jpeg;base64,")  # browsers cannot show HEIC: the page gets a JPEG


def test_image_without_face_is_a_clear_no_face_verdict(client):
    blank = encode(np.full((240, 320, 3), 128, np.uint8), "PNG")
    result = client.post("/v1/analyze", files=upload(blank, "blank.png", "image/png")).json()
    assert result["faces"] == []
    assert result["verdict"] == {
        "label": "no_face",
        "threshold_label": "no_face",
        "probability": None,
        "headline": "No face found — nothing was checked",
        "reason": "no face found (faces narrower than about 100 px, blurred or turned away are often missed, "
        "and none narrower than 20 px is reported)",
        "synthetic_probability": None,
        "verdict_driver": None,  # no face: no score drives
    }


# ------------------------------------------------------------------------------------------ 400
def test_malformed_requests_are_400(client, astronaut_jpeg):
    assert_error(
        client.post("/v1/analyze", content=astronaut_jpeg, headers={"content-type": "image/jpeg"}), 400, "bad_request"
    )
    assert_error(client.post("/v1/analyze", data={"note": "no file here"}), 400, "bad_request")
    body = assert_error(
        client.post("/v1/analyze", files={"image": ("a.jpg", astronaut_jpeg, "image/jpeg")}), 400, "bad_request"
    )
    assert body["detail"] == "no file: send the media in a multipart field named 'file', not 'image'"
    assert_error(client.post("/v1/analyze", files=upload(b"")), 400, "empty_file")
    two = [("file", ("a.jpg", astronaut_jpeg, "image/jpeg")), ("file", ("b.jpg", astronaut_jpeg, "image/jpeg"))]
    body = assert_error(client.post("/v1/analyze", files=two), 400, "bad_request")  # not the first, silently
    assert body["detail"] == "more than one 'file' field: send one file per request"
    assert upload_files(client) == []
    assert_error(client.post("/v1/jobs?frames=0", files=upload(astronaut_jpeg)), 400, "invalid_request")
    body = assert_error(client.post("/v1/jobs?frames=lots", files=upload(astronaut_jpeg)), 400, "invalid_request")
    assert "frames" in body["detail"]
    assert_error(client.post("/v1/analyze?preview=maybe", files=upload(astronaut_jpeg)), 400, "invalid_request")
    assert upload_files(client) == []


# ------------------------------------------------------------------------------------------ 401
def test_api_key_guards_every_v1_route(detector, astronaut_jpeg, monkeypatch):
    monkeypatch.setenv("DEEPSHIELD_API_KEY", "s3cret-key")
    settings = ServerSettings.from_env()
    assert settings.api_key == "s3cret-key"
    app = create_app(detector, settings)
    with TestClient(app) as client:
        calls = [
            lambda h: client.get("/v1/model", headers=h),
            lambda h: client.post("/v1/analyze", files=upload(astronaut_jpeg), headers=h),
            lambda h: client.post("/v1/jobs", files=upload(astronaut_jpeg), headers=h),
            lambda h: client.get("/v1/jobs/whatever", headers=h),
        ]
        for call in calls:
            assert_error(call({}), 401, "unauthorized")
            assert_error(call({"X-API-Key": "wrong"}), 401, "unauthorized")
        good = {"X-API-Key": "s3cret-key"}
        assert client.get("/v1/model", headers=good).status_code == 200
        assert client.post("/v1/analyze", files=upload(astronaut_jpeg), headers=good).status_code == 200
        assert client.get("/v1/jobs/whatever", headers=good).status_code == 404
        # The page, the docs and the health check stay open.
        assert client.get("/healthz").json()["api_key_required"] is True
        assert client.get("/").status_code == 200 and client.get("/docs").status_code == 200
        assert upload_files(client) == []


def test_how_long_finished_jobs_are_kept_is_said_in_its_own_unit():
    from deepshield.serving.jobs import _kept_for

    # A time to live under a minute read "0 minutes".
    assert [_kept_for(s) for s in (3600, 7200, 5400, 600, 60, 90, 20, 1, 0.5)] == [
        "1 hour", "2 hours", "90 minutes", "10 minutes", "1 minute", "90 seconds", "20 seconds", "1 second", "0.5 seconds"
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ 404 / 405
def test_unknown_things_are_json_404s(client):
    body = assert_error(client.get("/v1/jobs/not-a-job"), 404, "job_not_found")
    assert body["detail"] == "no job 'not-a-job': unknown, deleted, or finished more than 1 hour ago and forgotten"
    long_id = "x" * 5000  # echoed cut short
    assert f"no job '{'x' * 40}...':" in assert_error(client.get(f"/v1/jobs/{long_id}"), 404)["detail"]
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/nothing-here"), 404, "not_found")
    assert_error(client.get("/static/missing.js"), 404, "not_found")
    assert_error(client.get("/v1/analyze"), 405, "method_not_allowed")


# ------------------------------------------------------------------------------------------ 413
def _multipart(data: bytes, boundary: str = "deepshield-test-boundary") -> tuple[bytes, str]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_uploads_above_the_byte_limit_are_413(detector, astronaut_jpeg):
    with client_for(detector, max_upload_bytes=20_000) as client:
        # Refused from the declared length, before reading the body.
        assert_error(client.post("/v1/analyze", files=upload(astronaut_jpeg)), 413, "too_large")
        assert_error(client.post("/v1/jobs", files=upload(astronaut_jpeg)), 413, "too_large")
        # Refused while streaming when no length is declared (chunked upload).
        body, content_type = _multipart(astronaut_jpeg)
        chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
        response = client.post("/v1/analyze", content=chunks, headers={"content-type": content_type})
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "too_large")
        # Just under the limit is fine.
        small = encode(np.full((64, 64, 3), 90, np.uint8))
        assert client.post("/v1/analyze", files=upload(small)).status_code == 200
        assert upload_files(client) == []


# ------------------------------------------------------------------------------------------ 415
def test_an_upload_the_server_cannot_store_is_its_507_not_the_clients_400(detector, astronaut_jpeg, monkeypatch):
    # A full disk read "400 malformed multipart body: [Errno 28] No space left on device": not retried.
    import errno

    import deepshield.serving.uploads as uploads

    def disk_full(self, data: bytes, start: int, end: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with client_for(detector) as client:
        monkeypatch.setattr(uploads._Receiver, "on_part_data", disk_full)
        for path in ("/v1/analyze", "/v1/jobs"):
            body = assert_error(client.post(path, files=upload(astronaut_jpeg)), 507, "insufficient_storage")
            assert "No space left on device" in body["detail"]
        assert upload_files(client) == []  # the partial file is removed
        monkeypatch.undo()
        assert client.post("/v1/analyze", files=upload(astronaut_jpeg)).status_code == 200


@pytest.mark.parametrize("stateful", [False, True])
def test_an_upload_folder_the_server_cannot_make_again_is_its_507(
    detector, astronaut_jpeg, monkeypatch, tmp_path, stateful
):
    # The upload folder, gone (a temp cleaner) and not made again on a full disk, was a 500 with a traceback.
    import errno
    import pathlib
    import shutil

    import deepshield.serving.storage as storage

    with client_for(detector, **({"state_dir": tmp_path / "state"} if stateful else {})) as client:
        shutil.rmtree(client.app.state.runtime.upload_dir)

        def disk_full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        if stateful:
            monkeypatch.setattr(pathlib.Path, "mkdir", disk_full)
        else:
            monkeypatch.setattr(storage.tempfile, "mkdtemp", disk_full)
        body = assert_error(client.post("/v1/analyze", files=upload(astronaut_jpeg)), 507, "insufficient_storage")
        assert "No space left on device" in body["detail"]
        monkeypatch.undo()
        assert client.post("/v1/analyze", files=upload(astronaut_jpeg)).status_code == 200


def test_unsupported_types_are_415_by_content(client, astronaut_jpeg, face_video):
    body = assert_error(
        client.post("/v1/analyze", files=upload(b"%PDF-1.7 not a picture", "photo.jpg")), 415, "unsupported_media"
    )
    assert "unsupported file type" in body["detail"]
    assert_error(
        client.post("/v1/jobs", files=upload(b"#!/bin/sh\necho hi\n", "clip.mp4", "video/mp4")),
        415,
        "unsupported_media",
    )
    # A video sent to the synchronous route is pointed to the jobs route.
    body = assert_error(
        client.post("/v1/analyze", files=upload(face_video.read_bytes(), "clip.jpg")), 415, "video_needs_job"
    )
    assert "/v1/jobs" in body["detail"]
    assert upload_files(client) == []


# ------------------------------------------------------------------------------------------ 422
def test_corrupt_and_oversized_media_are_422(detector, client, astronaut_jpeg, astronaut):
    truncated = astronaut_jpeg[: len(astronaut_jpeg) // 3]
    assert_error(client.post("/v1/analyze", files=upload(truncated)), 422, "corrupt_media")
    smaller = Detector(detector.classifier, detector.faces, image_limits=ImageLimits(max_pixels=100_000))
    with client_for(smaller) as limited:  # a JPEG is read at a reduced scale
        result = limited.post("/v1/analyze", files=upload(astronaut_jpeg)).json()
        assert (result["width"], result["decoded_scale"]) == (256, 2) and "read at 1/2" in result["verdict"]["reason"]
    small_limits = Detector(
        detector.classifier, detector.faces, image_limits=ImageLimits(max_pixels=100_000, max_source_pixels=100_000)
    )
    with client_for(small_limits) as limited:
        body = assert_error(limited.post("/v1/analyze", files=upload(astronaut_jpeg)), 422, "media_too_large")
        assert "megapixel" in body["detail"]
        # The same through a job: the job fails with the same error body.
        job = limited.post("/v1/jobs", files=upload(astronaut_jpeg)).json()
        done = wait_for_job(limited, job["id"])
        assert done["status"] == "failed" and done["error"]["error"] == "media_too_large"
        assert upload_files(limited) == []


def test_video_limits_and_corrupt_videos_fail_their_jobs(detector, face_video):
    short_limit = Detector(detector.classifier, detector.faces, video_limits=VideoLimits(max_duration_s=1.0))
    with client_for(short_limit) as client:
        job = client.post("/v1/jobs", files=upload(face_video.read_bytes(), "clip.mp4", "video/mp4")).json()
        done = wait_for_job(client, job["id"])
        assert done["status"] == "failed"
        assert done["error"]["error"] == "media_too_large" and "limit" in done["error"]["detail"]
        broken = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8
        job = client.post("/v1/jobs", files=upload(broken, "broken.mp4", "video/mp4")).json()
        done = wait_for_job(client, job["id"])
        assert done["status"] == "failed" and done["error"]["error"] == "corrupt_media"
        assert upload_files(client) == []


# ------------------------------------------------------------------------------------------ jobs
def test_video_job_from_submission_to_result(client, face_video):
    response = client.post("/v1/jobs?frames=8", files=upload(face_video.read_bytes(), "face.mp4", "video/mp4"))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["kind"] == "video" and job["frames"] == 8
    seen = set()
    deadline = time.monotonic() + 60
    while job["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        job = client.get(response.headers["location"]).json()
        seen.add(job["status"])
        assert 0.0 <= job["progress"] <= 1.0
        time.sleep(0.02)
    assert job["status"] == "done", job["error"]
    assert job["progress"] == 1.0 and job["stage"] == "done"
    assert job["finished_at"] >= job["started_at"] >= job["created_at"]
    assert job["expires_at"] == pytest.approx(job["finished_at"] + ServerSettings().job_ttl_s)
    result = job["result"]
    assert result["kind"] == "video" and result["sampled_frames"] == 8
    assert len(result["tracks"]) == 1 and len(result["tracks"][0]["points"]) == 8
    (track,) = result["tracks"]
    # The one track's score, about 0.51 (the tiny model's), inside the band of 0.4 to 0.6: inconclusive.
    assert (result["inconclusive"]["low"], result["inconclusive"]["high"]) == (0.4, 0.6)
    assert result["verdict"]["probability"] == track["score"] and 0.4 <= track["score"] < 0.6
    assert result["verdict"]["label"] == track["label"] == "inconclusive"
    assert png_size(track["thumbnail_png"]) == (64, 64) and png_size(track["heatmap_png"]) == (64, 64)
    assert track["thumbnail_png"] != track["heatmap_png"]
    assert all(point["thumbnail_jpeg"].startswith("data:image/jpeg;base64,") for point in track["points"])
    assert track["frames_seen"] == 8 and track["counted"] is True and track["not_counted_reason"] is None
    assert (
        track["first_seen_s"] == result["timeline"][0]["timestamp_s"]
        and track["last_seen_s"] == result["timeline"][-1]["timestamp_s"]
    )
    assert track["peak_frame_index"] == max(track["points"], key=lambda p: p["probability"])["frame_index"]
    assert upload_files(client) == []  # the video was deleted when the job ended


def test_a_video_job_can_analyse_a_span_of_the_video(client, face_video):
    data = face_video.read_bytes()
    response = client.post("/v1/jobs?frames=4&start_s=0.5&end_s=1", files=upload(data, "face.mp4", "video/mp4"))
    assert response.status_code == 202, response.text
    assert (response.json()["start_s"], response.json()["end_s"]) == (0.5, 1.0)
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "done", job["error"]
    assert job["result"]["analysed"] == {"start_s": 0.5, "end_s": 1.0, "whole": False, "part": "0:00.5 to 0:01"}
    assert all(0.5 <= point["timestamp_s"] < 1.0 for point in job["result"]["timeline"])
    # A span the video does not reach fails its job as a request would (422); a malformed one is a 400.
    late = wait_for_job(client, client.post("/v1/jobs?start_s=30", files=upload(data, "face.mp4")).json()["id"])
    assert late["status"] == "failed" and late["error"]["error"] == "unprocessable"
    assert "nothing to analyse from 30 s on" in late["error"]["detail"]
    body = assert_error(
        client.post("/v1/jobs?start_s=2&end_s=1", files=upload(data, "face.mp4")), 400, "invalid_request"
    )
    assert "must end after it starts" in body["detail"]
    assert_error(client.post("/v1/jobs?start_s=-1", files=upload(data, "face.mp4")), 400, "invalid_request")
    for bound in ("start_s=inf", "start_s=nan", "end_s=nan"):  # not "greater than or equal to 0" for nan
        body = assert_error(client.post(f"/v1/jobs?{bound}", files=upload(data, "face.mp4")), 400, "invalid_request")
        assert body["detail"] == f"query.{bound.split('=')[0]}: Input should be a finite number"
    # An end past the video's (here far past: its frame number would overflow) is the whole video.
    far = client.post("/v1/jobs?frames=4&end_s=1e308", files=upload(data, "face.mp4")).json()["id"]
    assert wait_for_job(client, far)["result"]["analysed"]["whole"] is True
    assert upload_files(client) == []


def test_an_animated_gif_is_analysed_as_a_video(client, astronaut):
    frames = [Image.fromarray(np.roll(astronaut, 4 * i, axis=1)) for i in range(6)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    gif = buffer.getvalue()
    body = assert_error(
        client.post("/v1/analyze", files=upload(gif, "reaction.gif", "image/gif")), 415, "video_needs_job"
    )
    assert "animated image" in body["detail"]
    job = client.post("/v1/jobs?frames=6", files=upload(gif, "reaction.gif", "image/gif")).json()
    assert job["kind"] == "video"
    done = wait_for_job(client, job["id"])
    assert done["status"] == "done", done["error"]
    result = done["result"]
    assert result["video"]["codec"] == "gif" and result["video"]["duration_s"] == pytest.approx(1.2)
    assert [p["timestamp_s"] for p in result["timeline"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert len(result["tracks"]) == 1 and result["tracks"][0]["frames_seen"] == 6
    assert upload_files(client) == []


def test_job_progress_is_reported_stage_by_stage(detector, face_video):
    stages = []
    hooked = HookedDetector(detector)
    real_video = detector.analyze_video

    def recording_analyze_video(path, frames=32, progress=None, **options):
        def spy(fraction, stage):
            stages.append((fraction, stage))
            progress(fraction, stage)

        return real_video(path, frames=frames, progress=spy, **options)

    hooked.analyze_video = recording_analyze_video
    with client_for(hooked) as client:
        job = client.post("/v1/jobs?frames=4", files=upload(face_video.read_bytes(), "face.mp4")).json()
        assert wait_for_job(client, job["id"])["status"] == "done"
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert "detecting faces" in [s for _, s in stages]


def test_jobs_can_be_cancelled_queued_or_running_and_finished_ones_forgotten(detector, face_video, tmp_path):
    hooked = HookedDetector(detector)
    entered, release = threading.Event(), threading.Event()
    ended = []  # how each analysis that started ended
    real_video = detector.analyze_video

    def held_video(path, frames=32, progress=None, **options):
        entered.set()
        release.wait(20)
        try:
            result = real_video(path, frames=frames, progress=progress, **options)
        except BaseException as exc:
            ended.append(type(exc).__name__)
            raise
        ended.append("done")
        return result

    hooked.analyze_video = held_video
    state = tmp_path / "state"
    video = face_video.read_bytes()
    with client_for(hooked, state_dir=state) as client:
        running = client.post("/v1/jobs?frames=4", files=upload(video, "face.mp4")).json()
        assert entered.wait(20)
        queued = client.post("/v1/jobs?frames=4", files=upload(video, "face.mp4")).json()
        assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"
        # The load says so: one job analysed by the job worker, one waiting; no request analysis.
        load = client.get("/healthz").json()
        assert (load["jobs_running"], load["jobs_pending"], load["analyses_running"]) == (1, 2, 0)
        assert "deepshield_jobs_running 1.0" in client.get("/metrics").text
        assert len(upload_files(client)) == 2
        assert client.delete(f"/v1/jobs/{queued['id']}").status_code == 204
        assert_error(client.get(f"/v1/jobs/{queued['id']}"), 404, "job_not_found")
        assert len(upload_files(client)) == 1  # the queued job's file is deleted at once
        assert client.delete(f"/v1/jobs/{running['id']}").status_code == 204
        assert_error(client.get(f"/v1/jobs/{running['id']}"), 404, "job_not_found")
        release.set()
        deadline = time.monotonic() + 20
        while (not ended or upload_files(client)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ended == ["JobCancelled"]  # stopped at its first progress report; the queued one never ran
        assert upload_files(client) == []
        finished = client.post("/v1/jobs?frames=4", files=upload(video, "face.mp4")).json()
        assert wait_for_job(client, finished["id"])["status"] == "done"  # the worker was freed
        assert client.delete(f"/v1/jobs/{finished['id']}").status_code == 204  # its result forgotten
        assert_error(client.delete(f"/v1/jobs/{finished['id']}"), 404, "job_not_found")
        assert len(client.app.state.runtime.jobs) == 0
    with client_for(detector, state_dir=state) as client:  # nothing of them comes back after a restart
        assert len(client.app.state.runtime.jobs) == 0


def test_a_job_forgotten_as_it_is_deleted_is_deleted_not_a_server_error(detector, astronaut_jpeg, monkeypatch):
    with client_for(detector) as client:
        job = client.post("/v1/jobs", files=upload(astronaut_jpeg)).json()
        assert wait_for_job(client, job["id"])["status"] == "done"
        store = client.app.state.runtime.jobs
        looked_up = store.get

        def expiring_meanwhile(job_id):  # the job expires between the lookup and its removal
            found = looked_up(job_id)
            store.purge(now=time.time() + 10 * store.ttl_s)
            return found

        monkeypatch.setattr(store, "get", expiring_meanwhile)
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204  # was a 500 (KeyError)
        monkeypatch.undo()
        assert_error(client.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")


def test_a_job_running_at_shutdown_stops_and_runs_again_after_the_restart(detector, face_video, tmp_path, caplog):
    # The process waited at exit for the running job (up to the job time limit), then dropped its result;
    # the next start failed it ("submit the file again"), as after a crash, which a job might cause again:
    # a clean stop is none.
    hooked = HookedDetector(detector)
    entered, release = threading.Event(), threading.Event()
    ended = []
    real_video = detector.analyze_video

    def held_video(path, frames=32, progress=None, **options):
        entered.set()
        release.wait(20)
        try:
            return real_video(path, frames=frames, progress=progress, **options)
        except BaseException as exc:
            ended.append(type(exc).__name__)
            raise

    hooked.analyze_video = held_video
    state = tmp_path / "state"
    with client_for(hooked, state_dir=state) as client:
        job = client.post("/v1/jobs?frames=4", files=upload(face_video.read_bytes(), "face.mp4")).json()
        assert entered.wait(20)
    release.set()  # after the shutdown: the job's next progress report stops it
    deadline = time.monotonic() + 20
    while not ended and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended == ["JobCancelled"]
    caplog.set_level(logging.INFO, "deepshield.serving")
    with client_for(detector, state_dir=state) as client:
        # One counted as one: it said "1 job(s) requeued, 0 orphaned upload(s) removed".
        assert "job ledger: 1 job requeued, 0 orphaned uploads removed" in caplog.text
        after = wait_for_job(client, job["id"])
        assert after["status"] == "done" and len(after["result"]["tracks"]) == 1
        assert upload_files(client) == []


def test_a_saved_job_this_version_cannot_read_is_said_not_a_500(detector, astronaut_jpeg, tmp_path, caplog):
    # A result saved before a field was added (manipulation_label) failed JobView's validation on every poll.
    import json
    import sqlite3

    state = tmp_path / "state"
    with client_for(detector, state_dir=state) as client:
        old, broken = (client.post("/v1/jobs", files=upload(astronaut_jpeg)).json()["id"] for _ in range(2))
        assert wait_for_job(client, old)["status"] == wait_for_job(client, broken)["status"] == "done"
    with sqlite3.connect(state / "jobs.sqlite3") as db:
        (saved,) = db.execute("SELECT result FROM jobs WHERE id = ?", (old,)).fetchone()
        result = json.loads(saved)
        for face in result["faces"]:
            del face["manipulation_label"]
        db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(result), old))
        db.execute("UPDATE jobs SET file = '{' WHERE id = ?", (broken,))  # not even its file's record reads
    with caplog.at_level("WARNING", "deepshield.serving"), client_for(detector, state_dir=state) as client:
        response = client.get(f"/v1/jobs/{old}")
        assert response.status_code == 200 and response.json()["status"] == "failed"
        assert response.json()["error"]["error"] == "result_unreadable" and response.json()["result"] is None
        assert_error(client.get(f"/v1/jobs/{broken}"), 404, "job_not_found")
        assert client.get("/healthz").json()["job_error_statuses"]["result_unreadable"] == 410
    assert f"job ledger: job {broken} dropped, unreadable by this version" in caplog.text
    with sqlite3.connect(state / "jobs.sqlite3") as db:  # gone from the ledger, not only unanswered
        assert db.execute("SELECT id FROM jobs WHERE id = ?", (broken,)).fetchall() == []


def test_a_damaged_job_ledger_is_a_clear_error_not_a_traceback(detector, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "jobs.sqlite3").write_bytes(bytes(range(256)) * 20)
    with (
        pytest.raises(
            DeepShieldError,
            match=r"the job ledger \S*jobs.sqlite3 cannot be used \(file is not a database\); move it aside",
        ),
        client_for(detector, state_dir=state),
    ):
        pass


def test_the_state_folder_is_private_and_a_deleted_job_leaves_nothing_in_it(detector, astronaut_jpeg, tmp_path):
    # A state folder made 755 beforehand stayed so, the job database and its -wal were 644 (other users read
    # file names and face crops), and a deleted job's file name stayed in the -wal.
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    with client_for(detector, state_dir=state) as client:
        job = client.post("/v1/jobs", files=upload(astronaut_jpeg, "keep-me-private.jpg")).json()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state.stat().st_mode & 0o077 == 0
        assert list(state.glob("jobs.sqlite3*")) and all(
            f.stat().st_mode & 0o077 == 0 for f in state.glob("jobs.sqlite3*")
        )
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
        left = b"".join(f.read_bytes() for f in state.glob("jobs.sqlite3*"))
        assert b"keep-me-private" not in left


def test_image_job_gives_the_analyze_result(client, astronaut_jpeg):
    job = client.post("/v1/jobs", files=upload(astronaut_jpeg)).json()
    assert job["kind"] == "image"
    assert (job["frames"], job["start_s"], job["end_s"]) == (None, None, None)  # a video's options, not echoed
    done = wait_for_job(client, job["id"])
    assert done["status"] == "done"
    assert done["result"]["kind"] == "image" and len(done["result"]["faces"]) == 1
    assert done["result"]["faces"][0]["heatmap_png"].startswith("data:image/png;base64,")
    assert done["result"]["preview_jpeg"].startswith("data:image/jpeg;base64,")  # as the schema says


def test_jobs_expire_and_their_count_is_bounded(detector, astronaut_jpeg):
    with client_for(detector, job_ttl_s=0.3, max_jobs=2, max_pending_jobs=1) as client:
        ids = []
        for _ in range(3):
            job = client.post("/v1/jobs", files=upload(astronaut_jpeg)).json()
            assert wait_for_job(client, job["id"])["status"] == "done"
            ids.append(job["id"])
        # Only the last two are remembered: the one that finished first is forgotten first.
        assert_error(client.get(f"/v1/jobs/{ids[0]}"), 404, "job_not_found")
        assert client.get(f"/v1/jobs/{ids[2]}").status_code == 200
        time.sleep(0.4)
        assert_error(client.get(f"/v1/jobs/{ids[2]}"), 404, "job_not_found")
        assert len(client.app.state.runtime.jobs) == 0


def test_the_job_that_finished_first_is_forgotten_first(detector, astronaut_jpeg):
    # Forgotten by submission, a long job that had just finished went before a short one done long before.
    hooked = HookedDetector(detector)
    entered, release = threading.Event(), threading.Event()
    calls = []

    def hold_the_first() -> None:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            release.wait(20)

    hooked.hook = hold_the_first
    with client_for(hooked, job_workers=2, max_jobs=3, max_pending_jobs=2) as client:
        long = client.post("/v1/jobs", files=upload(astronaut_jpeg)).json()["id"]
        assert entered.wait(20)
        short = client.post("/v1/jobs", files=upload(astronaut_jpeg)).json()["id"]
        assert wait_for_job(client, short)["status"] == "done"
        release.set()
        assert wait_for_job(client, long)["status"] == "done"
        third = client.post("/v1/jobs", files=upload(astronaut_jpeg)).json()["id"]
        assert wait_for_job(client, third)["status"] == "done"
        client.post("/v1/jobs", files=upload(astronaut_jpeg))  # room for it: one finished job goes
        assert_error(client.get(f"/v1/jobs/{short}"), 404, "job_not_found")
        assert client.get(f"/v1/jobs/{long}").status_code == 200


# ------------------------------------------------------------------------------------------ 503 / 504 / 500
async def _post_async(client: httpx.AsyncClient, data: bytes, path: str = "/v1/analyze") -> httpx.Response:
    return await client.post(path, files=upload(data))


def _async_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=30)


def test_requests_beyond_the_queue_bound_get_503(detector, astronaut_jpeg):
    hooked = HookedDetector(detector)
    entered, release = threading.Event(), threading.Event()

    def block():
        entered.set()
        release.wait(20)

    hooked.hook = block
    app = create_app(hooked, ServerSettings(max_concurrency=1, max_queue=1))

    async def scenario():
        async with _async_client(app) as client:
            running = asyncio.create_task(_post_async(client, astronaut_jpeg))
            assert await asyncio.to_thread(entered.wait, 20)
            waiting = asyncio.create_task(_post_async(client, astronaut_jpeg))
            for _ in range(200):  # until the second request is admitted and queued
                if app.state.runtime.gate.admitted == 2:
                    break
                await asyncio.sleep(0.01)
            refused = await _post_async(client, astronaut_jpeg)
            health = await client.get("/healthz")
            release.set()
            return await running, await waiting, refused, health

    running, waiting, refused, health = asyncio.run(scenario())
    body = assert_error(refused, 503, "busy")
    # It said 'the server is busy (1 analyses running, 1 waiting)'.
    assert body["detail"] == "the server is busy (analyses running: 1, waiting: 1); retry in a few seconds"
    assert refused.headers["retry-after"]
    assert health.json()["analyses_running"] == 1 and health.json()["analyses_waiting"] == 1
    assert running.status_code == 200 and waiting.status_code == 200


def test_uploads_beyond_their_bounds_are_refused_in_words_right_for_one():
    # DEEPSHIELD_MAX_UPLOADS_PER_CLIENT=1 said 'at most 1 uploads at once', MAX_UPLOADS=1 '1 uploads are already'.
    from deepshield.serving.uploads import UploadPolicy, UploadSlots

    slots = UploadSlots(UploadPolicy.from_settings(ServerSettings(max_uploads_per_client=1, max_uploads=1)))
    with slots.hold("10.0.0.1"):
        with pytest.raises(ApiError) as per_client, slots.hold("10.0.0.1"):
            pass
        with pytest.raises(ApiError) as in_all, slots.hold("10.0.0.2"):
            pass
    assert per_client.value.detail == "at most 1 upload at once from one client; wait for one to finish"
    assert in_all.value.detail == "1 upload is already being received; retry in a few seconds"


def test_jobs_beyond_the_pending_bound_get_503(detector, astronaut_jpeg):
    hooked = HookedDetector(detector)
    release = threading.Event()
    hooked.hook = lambda: release.wait(20)
    with client_for(hooked, max_pending_jobs=1) as client:
        first = client.post("/v1/jobs", files=upload(astronaut_jpeg))
        assert first.status_code == 202
        body = assert_error(client.post("/v1/jobs", files=upload(astronaut_jpeg)), 503, "busy")
        assert body["detail"] == "1 job is already queued or running; retry in a minute"  # not '1 jobs are'
        release.set()
        assert wait_for_job(client, first.json()["id"])["status"] == "done"
        assert client.post("/v1/jobs", files=upload(astronaut_jpeg)).status_code == 202


def test_slow_analysis_times_out_with_504_and_cleans_up(detector, astronaut_jpeg):
    hooked = HookedDetector(detector)
    release = threading.Event()
    hooked.hook = lambda: release.wait(20)
    with client_for(hooked, request_timeout_s=0.3) as client:
        started = time.monotonic()
        body = assert_error(client.post("/v1/analyze", files=upload(astronaut_jpeg)), 504, "timeout")
        assert time.monotonic() - started < 5 and "did not finish within 0.3 s" in body["detail"]  # it read "0 s"
        release.set()
        deadline = time.monotonic() + 10
        while upload_files(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upload_files(client) == []
        hooked.hook = None
        assert client.post("/v1/analyze", files=upload(astronaut_jpeg)).status_code == 200


def test_a_crash_in_analysis_is_a_500_and_the_server_keeps_serving(detector, astronaut_jpeg, face_video):
    hooked = HookedDetector(detector)

    def crash():
        raise RuntimeError("simulated bug deep in the model")

    hooked.hook = crash
    with client_for(hooked) as client:
        body = assert_error(client.post("/v1/analyze", files=upload(astronaut_jpeg)), 500, "internal_error")
        assert "still running" in body["detail"] and "simulated" not in body["detail"]  # no internals leak
        assert body["detail"].startswith("the analysis failed unexpectedly (RuntimeError)")
        assert body["detail"].endswith("please report this file")
        # A crash outside an analysis (a job's poll) has no file to report.
        elsewhere = internal_error(RuntimeError("x")).detail
        assert elsewhere.startswith("the request failed unexpectedly") and elsewhere.endswith("please report it")
        job = client.post("/v1/jobs", files=upload(face_video.read_bytes(), "v.mp4")).json()
        failed = wait_for_job(client, job["id"])
        assert failed["status"] == "failed" and failed["error"]["error"] == "internal_error"
        hooked.hook = None
        assert client.post("/v1/analyze", files=upload(astronaut_jpeg)).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert upload_files(client) == []


# ------------------------------------------------------------------------------------------ page, docs, static files
def test_page_and_static_assets_are_served_with_protective_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="static/js/main.js">' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    # Every address relative: behind a proxy under a path prefix, /static and /v1 were another site's.
    assert re.findall(r'(?:href|src)="/', page.text) == []
    for asset in ("/static/style.css", "/static/favicon.svg", "/static/examples/index.json"):
        assert client.get(asset).status_code == 200, asset
    # The page's modules, each imported by path: served as JavaScript (a module of another type is refused).
    modules, pending = set(), ["main.js"]
    while pending:
        name = pending.pop()
        script = client.get("/static/js/" + name)
        assert script.status_code == 200 and "javascript" in script.headers["content-type"], name
        modules.add(name)
        pending += [found for found in re.findall(r'from "\./([\w-]+\.js)"', script.text) if found not in modules]
    # every module shipped is reached from main.js (one not imported is dead code, or an import was lost)
    import deepshield.serving

    shipped = Path(deepshield.serving.__file__).parent / "static" / "js"
    assert modules == {path.name for path in shipped.glob("*.js")} and len(modules) == 15
    # Their names carry no version: a browser revalidates each on every load, a 304 while unchanged, so
    # after an upgrade no old module runs beside new ones.
    first = client.get("/static/js/main.js")
    assert page.headers["cache-control"] == first.headers["cache-control"] == "no-cache"
    again = client.get("/static/js/main.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
    examples = client.get("/static/examples/index.json").json()
    assert {e["kind"] for e in examples} == {"image", "video"}
    for example in examples:
        assert client.get("/static/examples/" + example["file"]).status_code == 200
    # The page is also /static/index.html: it keeps its policy there (it was served without one).
    same_page = client.get("/static/index.html")
    assert same_page.text == page.text
    assert same_page.headers["content-security-policy"] == page.headers["content-security-policy"]
    # HEAD for uptime probes (a 405 before): headers, no body.
    for path in ("/", "/healthz", "/metrics"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path
    # A trailing slash is an unknown path, not a 307 to an address built from the Host header.
    assert_error(client.get("/v1/jobs/", headers={"Host": "evil.example"}, follow_redirects=False), 404, "not_found")


def test_unknown_or_repeated_query_options_and_overlong_boundaries_are_refused(client, astronaut_jpeg):
    # ?start=10 (for start_s) was ignored and the whole video analysed, at the default frames.
    body = assert_error(client.post("/v1/jobs?start=10&frames=4", files=upload(astronaut_jpeg)), 400, "invalid_request")
    assert body["detail"] == "query.start: unknown option; did you mean start_s?"
    body = assert_error(client.post("/v1/analyze?bogus=1", files=upload(astronaut_jpeg)), 400, "invalid_request")
    assert body["detail"] == "query.bogus: unknown option; this endpoint takes preview"
    body = assert_error(client.post("/v1/jobs?frames=5&frames=6", files=upload(astronaut_jpeg)), 400, "invalid_request")
    assert body["detail"] == "query.frames: given 2 times; give it once"
    assert_error(client.get("/v1/model?verbose=1"), 400, "invalid_request")
    assert client.post("/v1/analyze?preview=true", files=upload(astronaut_jpeg)).status_code == 200
    # An option sent as a form field (curl -F frames=64) was ignored as well: the video analysed at the default.
    jobs = len(client.app.state.runtime.jobs)
    for path in ("/v1/jobs", "/v1/analyze"):
        body = assert_error(
            client.post(path, data={"frames": "64"}, files=upload(astronaut_jpeg)), 400, "invalid_request"
        )
        assert (
            body["detail"]
            == "form.frames: unknown field; the form holds only the 'file' field: give options in the query (?frames=...)"
        )
    assert len(client.app.state.runtime.jobs) == jobs
    # python-multipart refuses a boundary over 256 characters as the parser is made: that was a 500
    # ("please report this file") with two tracebacks logged.
    boundary = "b" * 257
    response = client.post(
        "/v1/analyze", content=b"x", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "Boundary length 257" in assert_error(response, 400, "bad_request")["detail"]
    assert upload_files(client) == []


def test_an_api_key_no_request_could_send_is_refused_at_start():
    # The error names the variable, not the key (which it would leave in logs).
    with pytest.raises(
        ValueError, match=r"^server setting api_key \(DEEPSHIELD_API_KEY, its value not shown\): must be ASCII"
    ):
        ServerSettings.from_env({"DEEPSHIELD_API_KEY": "clé"})
    # HTTP strips the blanks around a header's value: the server started, then answered 401 to every call
    for key in (" sekret", "sekret\t", "sek\nret"):
        with pytest.raises(ValueError, match="must not begin or end with blanks or hold control characters") as refused:
            ServerSettings.from_env({"DEEPSHIELD_API_KEY": key})
        assert "DEEPSHIELD_API_KEY" in str(refused.value) and "sek" not in str(refused.value)


def test_docs_work_offline_from_vendored_swagger_ui(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert (
        'src="static/vendor/swagger-ui-bundle.js"' in docs.text and 'href="static/vendor/swagger-ui.css"' in docs.text
    )
    assert "url: 'openapi.json'" in docs.text  # relative, as the page's addresses
    assert "cdn." not in docs.text and "https://" not in docs.text
    bundle = client.get("/static/vendor/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 500_000
    assert client.get("/static/vendor/swagger-ui.css").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/analyze", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/model", "/healthz"} <= set(schema["paths"])
    analyze = schema["paths"]["/v1/analyze"]["post"]
    assert "multipart/form-data" in analyze["requestBody"]["content"]
    assert {"400", "413", "415", "422", "429", "503"} <= set(analyze["responses"])
    assert {"400", "422", "429", "503"} <= set(schema["paths"]["/v1/jobs"]["post"]["responses"])
    # every /v1 route refuses an unknown query parameter (400) and, with a key, a missing key (401)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                assert {"400", "401"} <= set(operation["responses"]), (method, path)
            if path.startswith("/v1/") and method in ("post", "delete"):  # SameOrigin's refusal
                assert "403" in operation["responses"], (method, path)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_a_job_sent_while_the_server_shuts_down_is_told_when_to_retry(detector, astronaut_jpeg):
    with client_for(detector) as client:
        client.app.state.runtime.jobs.close()
        response = client.post("/v1/jobs", files=upload(astronaut_jpeg))
        assert_error(response, 503, "shutting_down")
        assert response.headers["retry-after"] == "10"


def test_api_answers_are_never_stored_by_caches_and_the_page_may_be(client):
    assert client.get("/v1/model").headers["cache-control"] == "no-store"
    assert client.get("/v1/jobs/no-such-job").headers["cache-control"] == "no-store"  # errors too
    assert "cache-control" not in client.get("/healthz").headers
    assert client.get("/static/js/main.js").headers.get("cache-control") != "no-store"


TRAVERSALS = [
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static/..%2F..%2Fserving%2Fapp.py",
    "/static/%2e%2e/%2e%2e/serving/app.py",
    "/static/vendor/../../app.py",
    "/static/vendor/..%2f..%2fapp.py",
    "/static/..%5capp.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/....//....//app.py",
    "/../../../../etc/passwd",
]


def test_no_path_traversal_out_of_the_static_folder(detector):
    app = create_app(detector, ServerSettings())
    with live_server(app) as base_url:
        host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
        for path in TRAVERSALS:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.request("GET", path)  # sent byte for byte: no client-side normalisation
            response = connection.getresponse()
            body = response.read()
            connection.close()
            assert response.status in (400, 404), (path, response.status)
            assert b"create_app" not in body and b"root:" not in body, path
        # The server is still fine afterwards.
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", "/static/js/main.js")
        assert connection.getresponse().status == 200


def test_slow_reads_of_an_upload_or_the_job_ledger_never_hold_up_other_requests(detector, astronaut, monkeypatch):
    # Sniffing an upload reads the file (a GIF's frames were walked on the event loop: 13 s for 3 million of
    # them), and GET/DELETE of a job can write the ledger (5 s on a locked file): every request waited.
    import deepshield.serving.routes.uploads as uploads_routes
    from deepshield.serving.jobs import JobStore

    def slowly(function):
        def called(*args, **kwargs):
            time.sleep(1.0)  # well past the 0.3 s wait and the 0.5 s /healthz allows
            return function(*args, **kwargs)

        return called

    monkeypatch.setattr(uploads_routes, "is_animation", slowly(uploads_routes.is_animation))
    app = create_app(detector, ServerSettings())
    photo = encode(astronaut)
    with live_server(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
        job_id = http.post("/v1/jobs", files=upload(photo)).json()["id"]
        monkeypatch.setattr(JobStore, "get", slowly(JobStore.get))
        monkeypatch.setattr(JobStore, "cancel", slowly(JobStore.cancel))
        requests = [
            ("POST", "/v1/analyze", {"files": upload(photo)}),
            ("POST", "/v1/jobs", {"files": upload(photo)}),
            ("GET", f"/v1/jobs/{job_id}", {}),
            ("DELETE", f"/v1/jobs/{job_id}", {}),
        ]
        for method, path, options in requests:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(http.request, method, path, **options)
                time.sleep(0.3)  # the slow request is now in its sniff or ledger call
                started = time.monotonic()
                assert httpx.get(base_url + "/healthz", timeout=30).status_code == 200
                assert time.monotonic() - started < 0.5, f"/healthz waited on {method} {path}"
                assert answer.result().status_code in (200, 202, 204), (method, path, answer.result().text)


def test_a_port_in_use_is_refused_in_one_line_before_the_model_loads_or_an_address_is_printed(capsys, monkeypatch):
    import socket

    from deepshield.cli.main import EXIT_USAGE, main

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a server that cannot listen")

    monkeypatch.setattr(Detector, "from_bundle", no_model)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and err == f"deepshield: error: cannot serve on 127.0.0.1:{port}: Address already in use\n"


def test_a_port_out_of_range_is_a_usage_error(capsys, monkeypatch):
    # --port 70000 (or make run's PORT) ended in bind()'s OverflowError traceback.
    from deepshield.cli.main import main

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a server that cannot listen")

    monkeypatch.setattr(Detector, "from_bundle", no_model)
    for port in ("70000", "65536", "-1"):
        with pytest.raises(SystemExit) as stopped:
            main(["serve", "--port", port])
        assert stopped.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and err.splitlines()[-1] == (
            "deepshield serve: error: argument --port: must be from 0 to 65535 (0: any free one)"
        )
        assert "Traceback" not in err
    # serve() from Python, which has no argparse in front of it: one line too.
    from deepshield.serving.server import serve

    with pytest.raises(DeepShieldError, match=r"^cannot serve on 127\.0\.0\.1:70000: .*port must be 0-65535"):
        serve(port=70000, settings=ServerSettings())


def test_an_ipv6_servers_addresses_are_urls(detector, monkeypatch, capsys, tmp_path):
    # --host ::1 printed 'web page http://::1:8796/', which no browser opens, and 'cannot serve on ::1:8796'.
    import socket

    import uvicorn

    from deepshield.serving.server import serve

    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    monkeypatch.setattr(Detector, "from_bundle", lambda *args, **kwargs: detector)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    with socket.socket(socket.AF_INET6) as taken:
        try:
            taken.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeepShieldError, match=rf"^cannot serve on \[::1\]:{port}: Address already in use"):
            serve(host="::1", port=port, settings=ServerSettings(tmp_dir=tmp_path))  # its upload folder there
    serve(host="::1", port=port, settings=ServerSettings(tmp_dir=tmp_path))  # its upload folder there
    assert f"web page http://[::1]:{port}/ , API docs http://[::1]:{port}/docs" in capsys.readouterr().out


def test_healthz_serves_what_the_page_must_not_hard_code(client, detector):
    body = client.get("/healthz").json()
    assert body["limits"]["min_face_px"] == detector.faces.min_face_size
    assert body["scope"] == scope(detector.has_synthetic)  # the footer's "what the model judges"
    assert body["terms"] == detector.scoring_terms().model_dump(mode="json")  # the header's threshold and band
    assert body["accepted"] == {
        "image_formats": list(IMAGE_FORMATS),
        "video_formats": list(VIDEO_FORMATS),
        "image_suffixes": sorted(suffix[1:] for suffix in IMAGE_SUFFIXES),
        "video_suffixes": sorted(suffix[1:] for suffix in VIDEO_SUFFIXES),
    }
    # Each library refusal a job can fail with has the status the same refusal gets as a request.
    for error in (UnsupportedMediaError("x"), CorruptMediaError("x"), MediaTooLargeError("x"), DeepShieldError("x")):
        api = from_library_error(error)
        assert body["job_error_statuses"][api.code] == api.status
    assert {"internal_error", "timeout", "server_restarted"} <= set(body["job_error_statuses"])


def test_frames_above_the_servers_bound_are_refused(detector, astronaut_jpeg):
    with client_for(detector, max_video_frames=40) as client:
        body = assert_error(client.post("/v1/jobs?frames=41", files=upload(astronaut_jpeg)), 400, "invalid_request")
        assert "frames" in body["detail"] and "40" in body["detail"]
        assert client.post("/v1/jobs?frames=40", files=upload(astronaut_jpeg)).status_code == 202


def test_metrics_count_analyses_errors_and_load(detector, astronaut_jpeg, face_video):
    from prometheus_client.parser import text_string_to_metric_families

    with client_for(detector, api_key="k") as client:
        assert_error(client.post("/v1/analyze", files=upload(astronaut_jpeg)), 401)  # no key
        client.headers["X-API-Key"] = "k"
        image = client.post("/v1/analyze", files=upload(astronaut_jpeg)).json()
        assert_error(client.post("/v1/analyze", files=upload(b"notes, not a photo", "notes.jpg")), 415)
        job = client.post("/v1/jobs?frames=4", files=upload(face_video.read_bytes(), "face.mp4")).json()
        video = wait_for_job(client, job["id"])["result"]
        del client.headers["X-API-Key"]
        response = client.get("/metrics")  # like /healthz, open without the key: for the scraper
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("deepshield_analyses_total", (("kind", "image"), ("verdict", image["verdict"]["label"])))] == 1
    assert samples[("deepshield_analyses_total", (("kind", "video"), ("verdict", video["verdict"]["label"])))] == 1
    assert samples[("deepshield_analysis_seconds_count", (("kind", "image"),))] == 1
    assert samples[("deepshield_errors_total", (("code", "unsupported_media"),))] == 1
    assert samples[("deepshield_errors_total", (("code", "unauthorized"),))] == 1
    assert samples[("deepshield_jobs_pending", ())] == 0 and samples[("deepshield_analyses_running", ())] == 0
    assert samples[("deepshield_jobs_running", ())] == 0
    assert samples[("deepshield_model_info", (("model", "tiny-test 0.0.1"),))] == 1


# ------------------------------------------------------------------------------------------ settings
def test_settings_come_from_the_environment():
    settings = ServerSettings.from_env(
        {
            "DEEPSHIELD_MAX_QUEUE": "4",
            "DEEPSHIELD_REQUEST_TIMEOUT_S": "2.5",
            "DEEPSHIELD_API_KEY": "k",
        }
    )
    assert (settings.max_queue, settings.request_timeout_s, settings.api_key) == (4, 2.5, "k")
    assert settings.max_upload_bytes == ServerSettings().max_upload_bytes
    with pytest.raises(ValueError, match="DEEPSHIELD_MAX_QUEUE"):
        ServerSettings.from_env({"DEEPSHIELD_MAX_QUEUE": "many"})
    with pytest.raises(ValueError, match="max_concurrency"):
        ServerSettings.from_env({"DEEPSHIELD_MAX_CONCURRENCY": "0"})
    # A misspelt variable started a server without what it meant (no API key here); model building's own
    # variable is no server setting but no mistake either.
    with pytest.raises(
        ValueError, match=r"unknown server setting DEEPSHIELD_API_KEYS \(did you mean DEEPSHIELD_API_KEY\?\)"
    ):
        ServerSettings.from_env({"DEEPSHIELD_API_KEYS": "k"})
    assert ServerSettings.from_env({"DEEPSHIELD_DATA_ROOT": "/data"}) == ServerSettings()
    # A misspelt prefix too: DEEPSHEILD_API_KEY started the server with no key; other variables are left alone.
    for misspelt in ("DEEPSHEILD_API_KEY", "DEEP_SHIELD_API_KEY"):
        with pytest.raises(ValueError, match=rf"{misspelt} \(did you mean DEEPSHIELD_API_KEY\?\)"):
            ServerSettings.from_env({misspelt: "k"})
    assert ServerSettings.from_env({"PATH": "/usr/bin", "API_KEY": "k", "SHELL": "/bin/sh"}) == ServerSettings()
    # inf is no limit (a TTL of inf made every unknown job's 404 a 500), and finished jobs need room.
    with pytest.raises(ValueError, match=r"job_ttl_s .*finite"):
        ServerSettings.from_env({"DEEPSHIELD_JOB_TTL_S": "inf"})
    with pytest.raises(ValueError, match="max_pending_jobs=4 must be below max_jobs=4"):
        ServerSettings(max_jobs=4, max_pending_jobs=4)


def test_checks_across_settings_name_the_variables_and_their_values():
    # "video_frames must not exceed max_video_frames" named neither the variables nor the values.
    with pytest.raises(
        ValueError, match=r"^DEEPSHIELD_VIDEO_FRAMES=200 must not exceed DEEPSHIELD_MAX_VIDEO_FRAMES \(unset, so 128\)$"
    ):
        ServerSettings.from_env({"DEEPSHIELD_VIDEO_FRAMES": "200"})
    with pytest.raises(
        ValueError, match=r"^DEEPSHIELD_VIDEO_FRAMES=64 must not exceed DEEPSHIELD_MAX_VIDEO_FRAMES=40$"
    ):
        ServerSettings.from_env({"DEEPSHIELD_VIDEO_FRAMES": "64", "DEEPSHIELD_MAX_VIDEO_FRAMES": "40"})
    with pytest.raises(
        ValueError,
        match=r"^DEEPSHIELD_MAX_PENDING_JOBS \(unset, so 8\) must be below DEEPSHIELD_MAX_JOBS=8 \(finished jobs need room\)$",
    ):
        ServerSettings.from_env({"DEEPSHIELD_MAX_JOBS": "8"})
    # A keyword override of from_env is named as the keyword, not as the variable it overrides.
    with pytest.raises(ValueError, match=r"^DEEPSHIELD_VIDEO_FRAMES=64 must not exceed max_video_frames=32$"):
        ServerSettings.from_env(
            {"DEEPSHIELD_VIDEO_FRAMES": "64", "DEEPSHIELD_MAX_VIDEO_FRAMES": "100"}, max_video_frames=32
        )
    with pytest.raises(ValidationError, match=r"video_frames=200 must not exceed max_video_frames \(by default 128\)"):
        ServerSettings(video_frames=200)


def test_a_setting_set_but_empty_is_refused_at_start_naming_it(capsys, monkeypatch):
    # `DEEPSHIELD_API_KEY= deepshield serve` (or a key from an unset shell variable) started a server open to
    # all, without its "API key required" line: an empty variable was taken for an unset one.
    from deepshield.cli.main import EXIT_USAGE, main

    with pytest.raises(ValueError, match=r"^DEEPSHIELD_API_KEY is set but empty: give it a value, or unset it"):
        ServerSettings.from_env({"DEEPSHIELD_API_KEY": ""})
    with pytest.raises(
        ValueError,
        match=r"^DEEPSHIELD_MAX_QUEUE, DEEPSHIELD_STATE_DIR are set but empty: give each a value, or unset them for",
    ):
        ServerSettings.from_env({"DEEPSHIELD_STATE_DIR": "", "DEEPSHIELD_MAX_QUEUE": "", "DEEPSHIELD_API_KEY": "k"})
    assert ServerSettings.from_env({"DEEPSHIELD_DATA_ROOT": ""}) == ServerSettings()  # model building's, not read

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a server whose settings are wrong")

    monkeypatch.setattr(Detector, "from_bundle", no_model)
    monkeypatch.setenv("DEEPSHIELD_API_KEY", "")
    assert main(["serve", "--port", "0"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "deepshield: error: invalid server setting in the environment: DEEPSHIELD_API_KEY is set but empty: "
        "give it a value, or unset it for the default\n"
    )


def test_a_tmp_or_state_folder_that_cannot_be_used_is_refused_at_start_in_one_line(capsys, monkeypatch, tmp_path):
    # A missing or file TMP_DIR, a file STATE_DIR or one under a file ended the start in a traceback
    # (FileNotFoundError, NotADirectoryError, FileExistsError).
    from deepshield.cli.main import EXIT_USAGE, main

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a server whose settings are wrong")

    monkeypatch.setattr(Detector, "from_bundle", no_model)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    cases = [
        (
            "DEEPSHIELD_TMP_DIR",
            tmp_path / "missing",
            "tmp_dir",
            "no such folder (it is not made: name an existing one)",
        ),
        ("DEEPSHIELD_TMP_DIR", a_file, "tmp_dir", "is a file, not a folder"),
        ("DEEPSHIELD_STATE_DIR", a_file, "state_dir", "is a file, not a folder"),
        ("DEEPSHIELD_STATE_DIR", a_file / "sub", "state_dir", f"cannot be made: {a_file} is a file, not a folder"),
    ]
    for variable, value, name, why in cases:
        with monkeypatch.context() as env:
            env.setenv(variable, str(value))
            assert main(["serve", "--port", "0"]) == EXIT_USAGE
        out, err = capsys.readouterr()
        assert out == "" and err == (
            f"deepshield: error: invalid server setting in the environment: server setting {name} "
            f"({variable}={str(value)!r}): {why}\n"
        )
    # Storage, as the Python API makes it with settings of its own: one line too.
    from deepshield.serving.storage import Storage

    with pytest.raises(DeepShieldError, match=rf"^the state folder {re.escape(str(a_file))}/sub cannot be made: "):
        Storage(a_file / "sub", None)
    # A folder still to be made is fine: the server makes it.
    assert ServerSettings.from_env({"DEEPSHIELD_STATE_DIR": str(tmp_path / "new" / "state")}).state_dir == (
        tmp_path / "new" / "state"
    )


def test_content_credentials_are_checked_against_the_servers_trust_anchors(detector, astronaut, tmp_path):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signing_identity().root_pem)
    settings = ServerSettings.from_env({"DEEPSHIELD_C2PA_TRUST_ANCHORS": str(anchors)})
    assert settings.c2pa_trust_anchors == anchors
    signed = with_credentials(photo_with_exif(astronaut), "image/jpeg")
    vouching = Detector(detector.classifier, detector.faces, trust_anchors=TrustAnchors.load(anchors))
    for checker, state in ((detector, "valid"), (vouching, "trusted")):
        with client_for(checker) as client:
            answer = client.post("/v1/analyze", files=upload(signed)).json()
        metadata = answer["metadata"]
        assert metadata["credentials"]["state"] == state
        assert metadata["declared_source"]["code"] == "trainedAlgorithmicMedia"
        # As the Python API and scan say it (the API's reason had no word of it).
        assert answer["verdict"]["reason"].endswith(
            'the file declares "Created using generative AI" in its Content Credentials: a claim read from it, not scored'
        )


def test_a_loopback_server_answers_to_loopback_names_only(detector, astronaut_jpeg):
    # DNS rebinding: a page at http://evil.example:8000/ whose name then resolves to 127.0.0.1 is of the same
    # origin as a server listening there, so SameOrigin let it submit files and read their results (200).
    rebound = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    with TestClient(create_app(detector, ServerSettings(), listen_host="127.0.0.1")) as client:
        body = assert_error(
            client.post("/v1/analyze", files=upload(astronaut_jpeg), headers=rebound), 400, "unknown_host"
        )
        assert "'evil.example'" in body["detail"] and "DEEPSHIELD_ALLOWED_HOSTS" in body["detail"]
        assert_error(client.get("/", headers={"Host": "evil.example"}), 400, "unknown_host")
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LocalHost.", "app.localhost", "127.0.0.2"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    named = ServerSettings(allowed_hosts="shield.example.org, [fd00::1]")
    with TestClient(create_app(detector, named, listen_host="127.0.0.1")) as client:
        assert client.get("/healthz", headers={"Host": "Shield.Example.org:443"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "[fd00::1]:8000"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 200
        assert_error(client.get("/healthz", headers={"Host": "evil.example"}), 400, "unknown_host")
    # Listening on every interface (a container, a LAN server), the names it is reached by are not known.
    with TestClient(create_app(detector, ServerSettings(), listen_host="0.0.0.0")) as client:
        assert client.get("/healthz", headers={"Host": "deepshield.lan:8000"}).status_code == 200
    with pytest.raises(ValidationError, match=r"'https://shield\.example\.org' is not a host name"):
        ServerSettings(allowed_hosts="https://shield.example.org")
    with pytest.raises(ValidationError, match=r"'shield\.example\.org:8000' is not a host name"):
        ServerSettings(allowed_hosts="shield.example.org:8000")


def test_the_schema_declares_the_headers_and_answers_clients_get(detector, astronaut_jpeg):
    # A client generated from the schema never saw Location or Retry-After (only described), expected no body
    # from /metrics, no 400 from /healthz, and a key on every /v1 call of a server that has none.
    schema = create_app(detector, ServerSettings()).openapi()
    jobs = schema["paths"]["/v1/jobs"]["post"]["responses"]
    assert "Location" in jobs["202"]["headers"]
    assert all("Retry-After" in jobs[status]["headers"] for status in ("429", "503"))
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "400" in schema["paths"]["/healthz"]["get"]["responses"]
    assert schema["paths"]["/v1/model"]["get"]["security"] == [{}, {"APIKeyHeader": []}]
    keyed = create_app(detector, ServerSettings(api_key="k")).openapi()  # a server with a key needs it
    assert keyed["paths"]["/v1/model"]["get"]["security"] == [{"APIKeyHeader": []}]
    # The middlewares' refusals are counted by code and carry the /v1 headers, as the routes' errors do.
    app = create_app(detector, ServerSettings(), listen_host="127.0.0.1")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        refused = client.get("/v1/model", headers={"Host": "evil.example"})
        assert refused.status_code == 400 and refused.headers["cache-control"] == "no-store"
        assert refused.headers["x-content-type-options"] == "nosniff"
        client.post("/v1/analyze", files=upload(astronaut_jpeg), headers={"Origin": "https://evil.example"})
        counted = [
            line for line in client.get("/metrics").text.splitlines() if line.startswith("deepshield_errors_total{")
        ]
        assert counted == [
            'deepshield_errors_total{code="unknown_host"} 1.0',
            'deepshield_errors_total{code="cross_origin"} 1.0',
        ]


def test_upload_folder_is_private_and_removed_at_shutdown(detector, astronaut_jpeg):
    with client_for(detector) as client:
        folder = client.app.state.runtime.upload_dir
        assert folder.stat().st_mode & 0o077 == 0  # this user only
        assert (
            client.post("/v1/analyze", files=upload(astronaut_jpeg, name="../../etc/evil.jpg")).json()["file"]["name"]
            == "evil.jpg"
        )
    assert not folder.exists()


def test_a_web_page_of_another_origin_cannot_submit_or_delete(client, astronaut_jpeg):
    # A multipart POST needs no CORS preflight: any site a visitor opened could submit jobs to a server on
    # their machine (202 with Origin: https://evil.example).
    foreign = {"Origin": "https://evil.example"}
    assert_error(client.post("/v1/jobs", files=upload(astronaut_jpeg), headers=foreign), 403, "cross_origin")
    assert_error(
        client.post("/v1/analyze", files=upload(astronaut_jpeg), headers={"Origin": "null"}), 403, "cross_origin"
    )
    own = {"Origin": "http://TestServer"}  # the server's own page (host names are not case-sensitive)
    assert client.post("/v1/analyze", files=upload(astronaut_jpeg), headers=own).status_code == 200
    assert client.post("/v1/analyze", files=upload(astronaut_jpeg)).status_code == 200  # no Origin: not a browser
    assert client.get("/v1/model", headers=foreign).status_code == 200  # reading changes nothing
    for malformed in ("http://[", "http://[::1", "http://a]b"):  # a 500 and a logged traceback each
        body = assert_error(client.post("/v1/jobs", headers={"Origin": malformed}), 403, "cross_origin")
        assert body["detail"] == f"requests from the web page at {malformed!r} are refused: use this server's own page"


def test_a_request_that_crashes_logs_its_traceback_once(detector):
    # The app's handler logged it ('request failed', its traceback) and answered 500; Starlette then raised it
    # again to uvicorn, which logged the same traceback a second time as 'Exception in ASGI application'.
    import logging

    app = create_app(detector, ServerSettings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    logged: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info:
                logged.append(record)

    keep = Keep()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "deepshield.serving")]
    with live_server(app, settings=ServerSettings()) as base_url:
        for logger in loggers:  # once uvicorn has set its loggers up (which drops handlers added before)
            logger.addHandler(keep)
        try:
            crashed = httpx.get(f"{base_url}/boom", headers={"X-Request-ID": "crash-1"}, timeout=30)
            assert crashed.status_code == 500 and crashed.json()["request_id"] == "crash-1"
            time.sleep(0.5)  # uvicorn logs once the response is sent
        finally:
            for logger in loggers:
                logger.removeHandler(keep)
    # Named by its request's id, as its answer and its access line are.
    assert [record.getMessage() for record in logged] == ["request failed (request crash-1)"]


def test_every_answer_carries_a_request_id_its_error_body_and_access_log_line_name(detector):
    # A client reporting a failed call had nothing to name it by in the server's log, nor the log to tell it.
    import logging

    from deepshield.serving.server import access_log_config

    with client_for(detector) as client:
        made = client.get("/healthz").headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        assert client.get("/healthz").headers["x-request-id"] != made  # one per request
        given = "edge-7f3a:42.b_c"
        response = client.get("/v1/jobs/nope", headers={"X-Request-ID": given})
        assert response.headers["x-request-id"] == given and assert_error(response, 404)["request_id"] == given
        for insane in ("a b", "x" * 129, "id\x1b[2J", ""):  # not echoed into headers, bodies or the log
            answered = client.get("/healthz", headers={"X-Request-ID": insane}).headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", answered), insane
    import logging.config

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    config = access_log_config()
    handler.setFormatter(logging.config.DictConfigurator(config).configure_formatter(config["formatters"]["access"]))
    access = logging.getLogger("uvicorn.access")
    with live_server(create_app(detector), settings=ServerSettings()) as url:
        level = access.level
        access.setLevel(logging.INFO)  # the test server's level is warning
        access.addHandler(handler)
        try:
            assert httpx.get(f"{url}/v1/jobs/nope", headers={"X-Request-ID": given}).status_code == 404
        finally:
            access.removeHandler(handler)
            access.setLevel(level)
    (line,) = [line for line in lines if "/v1/jobs/nope" in line]
    assert line.endswith(f"404 Not Found {given}"), line
