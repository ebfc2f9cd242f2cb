"""GET /healthz: liveness, load, limits and what the server accepts (the web page reads it at start);
GET /metrics: the same server's counts and load for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from deepshield.inference.results import scope
from deepshield.serving.errors import JOB_ERROR_STATUSES, error_responses
from deepshield.serving.runtime import RuntimeDep
from deepshield.serving.schemas import Health

router = APIRouter(tags=["health"], responses=error_responses(400))  # 400: a Host the server does not answer to


@router.get("/healthz", response_model=Health, summary="Liveness and load")
async def healthz(runtime: RuntimeDep) -> Health:
    gate = runtime.gate
    return Health(
        model=runtime.detector.model_name,
        scope=scope(runtime.detector.has_synthetic),
        api_key_required=bool(runtime.settings.api_key),
        analyses_running=gate.running,
        analyses_waiting=gate.waiting,
        jobs_pending=runtime.jobs.pending(),
        jobs_running=runtime.jobs.running(),
        limits=runtime.limits(),
        accepted=runtime.accepted_media(),
        terms=runtime.detector.scoring_terms(),
        job_error_statuses=JOB_ERROR_STATUSES,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Files analysed by kind and verdict, analysis times, errors by code, analyses running and "
    "waiting, jobs pending, the model in use (Prometheus text format).",
    response_class=Response,
    responses={200: {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
