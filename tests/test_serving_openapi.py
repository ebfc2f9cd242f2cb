"""The REST API's published contract (GET /openapi.json, what clients are generated from) against what the
server really sends: every answer a route gives, its status, content type and body, checked against the
schema the document declares for that route and status."""

from __future__ import annotations

import re
import threading

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.test_serving_api import HookedDetector, client_for, encode, upload, wait_for_job


class Contract:
    """The app's OpenAPI document, and the mismatches of the answers checked against it."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.document = client.get("/openapi.json").json()
        self.mismatches: list[str] = []
        self.checked: set[tuple[str, str, int]] = set()

    def operation(self, method: str, path: str) -> tuple[str, dict]:
        for template, operations in self.document["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            if re.match(pattern, path) and method.lower() in operations:
                return template, operations[method.lower()]
        raise AssertionError(f"{method} {path}: no such operation in the document")

    def check(self, response, *, status: int | None = None):
        """Check one real answer against the document; returns its body (JSON where it is)."""
        request = response.request
        path = request.url.path
        template, operation = self.operation(request.method, path)
        where = f"{request.method} {template} {response.status_code}"
        if status is not None:
            assert response.status_code == status, (where, response.text)
        self.checked.add((request.method, template, response.status_code))
        declared = operation["responses"].get(str(response.status_code)) or operation["responses"].get("default")
        if declared is None:
            self.mismatches.append(f"{where}: status not documented")
            return None
        content = declared.get("content", {})
        sent_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not response.content and not sent_type:
            if content:
                self.mismatches.append(f"{where}: no body sent, the document declares {sorted(content)}")
            return None
        if sent_type not in content:
            self.mismatches.append(f"{where}: sent {sent_type!r}, the document declares {sorted(content)}")
            return None
        schema = content[sent_type].get("schema")
        if sent_type != "application/json":
            return response.text
        body = response.json()
        if schema is None:
            self.mismatches.append(f"{where}: JSON body with no schema declared")
            return body
        validator = jsonschema.Draft202012Validator(
            {**schema, "components": self.document.get("components", {})},
        )
        for error in validator.iter_errors(body):
            self.mismatches.append(f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message[:300]}")
        return body


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encode(astronaut)


def test_every_answer_of_every_route_is_the_one_the_document_declares(detector, photo, face_video):
    blank = encode(np.full((240, 320, 3), 128, np.uint8), "PNG")
    video = face_video.read_bytes()
    with client_for(detector) as client:
        contract = Contract(client)
        check = contract.check
        check(client.get("/healthz"), status=200)
        metrics = check(client.get("/metrics"), status=200)
        assert isinstance(metrics, str) and metrics.startswith("#"), contract.mismatches
        check(client.get("/v1/model"), status=200)
        check(client.get("/v1/model/record"), status=200)
        faces = check(client.post("/v1/analyze?preview=true", files=upload(photo)), status=200)
        assert faces["faces"] and faces["preview_jpeg"]
        no_face = check(client.post("/v1/analyze", files=upload(blank, "blank.png", "image/png")), status=200)
        assert no_face["verdict"]["label"] == "no_face"
        check(client.post("/v1/analyze", files=upload(b"")), status=400)
        check(client.get("/v1/model?unknown=1"), status=400)
        check(client.post("/v1/analyze", files=upload(photo), headers={"Origin": "https://evil.example"}), status=403)
        check(client.get("/v1/jobs/no-such-job"), status=404)
        check(client.delete("/v1/jobs/no-such-job"), status=404)
        check(client.post("/v1/analyze", files=upload(b"%PDF-1.7 not a picture")), status=415)
        check(client.post("/v1/analyze", files=upload(video, "clip.mp4", "video/mp4")), status=415)
        check(client.post("/v1/analyze", files=upload(photo[: len(photo) // 3])), status=422)
        submitted = check(client.post("/v1/jobs?frames=4", files=upload(video, "face.mp4", "video/mp4")), status=202)
        job = wait_for_job(client, submitted["id"])
        done = check(client.get(f"/v1/jobs/{submitted['id']}"), status=200)
        assert job["status"] == "done" and done["result"]["kind"] == "video"
        check(client.delete(f"/v1/jobs/{submitted['id']}"), status=204)
        broken = client.post("/v1/jobs", files=upload(photo[: len(photo) // 3])).json()
        assert wait_for_job(client, broken["id"])["status"] == "failed"
        check(client.get(f"/v1/jobs/{broken['id']}"), status=200)
        image_job = client.post("/v1/jobs", files=upload(photo)).json()
        assert wait_for_job(client, image_job["id"])["status"] == "done"
        check(client.get(f"/v1/jobs/{image_job['id']}"), status=200)
        mismatches = contract.mismatches
    with client_for(detector, api_key="k3y") as client:
        contract = Contract(client)
        for response in (
            client.get("/v1/model"),
            client.post("/v1/analyze", files=upload(photo)),
            client.post("/v1/jobs", files=upload(photo)),
            client.get("/v1/jobs/x"),
            client.delete("/v1/jobs/x"),
        ):
            contract.check(response, status=401)
        mismatches += contract.mismatches
    with client_for(detector, max_upload_bytes=1000) as client:
        contract = Contract(client)
        contract.check(client.post("/v1/analyze", files=upload(photo)), status=413)
        contract.check(client.post("/v1/jobs", files=upload(photo)), status=413)
        mismatches += contract.mismatches
    assert mismatches == []


def test_jobs_in_every_state_and_the_servers_refusals_are_as_documented(detector, photo, face_video):
    hooked = HookedDetector(detector)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(20)

    hooked.hook = hold
    with client_for(hooked, max_pending_jobs=2, request_timeout_s=0.3) as client:
        contract = Contract(client)
        check = contract.check
        running = check(client.post("/v1/jobs?frames=4", files=upload(face_video.read_bytes(), "f.mp4")), status=202)
        assert entered.wait(20)
        queued = check(client.post("/v1/jobs", files=upload(photo)), status=202)
        assert check(client.get(f"/v1/jobs/{running['id']}"))["status"] == "running"
        assert check(client.get(f"/v1/jobs/{queued['id']}"))["status"] == "queued"
        check(client.post("/v1/jobs", files=upload(photo)), status=503)  # busy
        check(client.post("/v1/analyze", files=upload(photo)), status=504)
        release.set()
        for job in (running, queued):
            assert wait_for_job(client, job["id"])["status"] == "done"
            check(client.get(f"/v1/jobs/{job['id']}"), status=200)

        def crash() -> None:
            raise RuntimeError("simulated")

        hooked.hook = crash
        check(client.post("/v1/analyze", files=upload(photo)), status=500)
        client.app.state.runtime.jobs.close()
        check(client.post("/v1/jobs", files=upload(photo)), status=503)  # shutting_down
    assert contract.mismatches == []


def _allows(parameter: dict, value: object) -> bool:
    return jsonschema.Draft202012Validator(parameter["schema"]).is_valid(value)


def test_query_limits_are_declared_as_the_server_enforces_them(detector, photo):
    # frames: the server refuses more than its max_video_frames, a setting; the document said only minimum 1.
    with client_for(detector, video_frames=4, max_video_frames=16) as client:
        contract = Contract(client)
        _, operation = contract.operation("POST", "/v1/jobs")
        parameters = {p["name"]: p for p in operation["parameters"]}
        cases = [
            ("frames", 0), ("frames", 1), ("frames", 16), ("frames", 17),
            ("start_s", -1), ("start_s", 0), ("end_s", 0), ("end_s", 0.5),
        ]  # fmt: skip
        disagree = []
        for name, value in cases:
            response = client.post(f"/v1/jobs?{name}={value}", files=upload(photo))
            contract.check(response)
            taken = response.status_code == 202
            if taken != _allows(parameters[name], value):
                disagree.append((name, value, response.status_code, parameters[name]["schema"]))
        assert disagree == []
        assert contract.mismatches == []


def test_the_document_says_whose_each_score_field_is(detector):
    """Beside synthetic_threshold and synthetic_probability, `threshold`, `inconclusive` and a face's
    `probability` and `logit` did not say they are the face-swap score's (a face's said "manipulated")."""
    from deepshield.serving.app import create_app
    from deepshield.serving.settings import ServerSettings

    schemas = create_app(detector, ServerSettings()).openapi()["components"]["schemas"]
    for model, fields in {
        "AnalyzeResponse": ("threshold", "inconclusive"),
        "FaceView": ("probability", "logit"),
        "TrackView": ("score",),
        "TrackPointView": ("probability",),
        "TimelinePoint": ("max_probability",),
    }.items():
        for name in fields:
            assert "face-swap" in schemas[model]["properties"][name]["description"], (model, name)
    for model, name in (("FaceView", "synthetic_logit"), ("TimelinePoint", "max_synthetic_probability")):
        assert "synthetic-face" in schemas[model]["properties"][name]["description"], (model, name)
