"""GET /v1/model: the card of the model in use; GET /v1/model/record: its figures on real labelled media."""

from __future__ import annotations

from fastapi import APIRouter

from deepshield.models.card import ModelCard, ModelRecord
from deepshield.serving.runtime import RuntimeDep

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelCard, summary="The model card of the model in use")
async def model_card(runtime: RuntimeDep) -> ModelCard:
    return runtime.detector.card


@router.get(
    "/model/record",
    response_model=ModelRecord,
    summary="How the model in use did on real labelled media",
    description="Per labelled set the card's metrics name (the benchmarks that chose the model, so they flatter "
    "it): file and face AUC with their 95% intervals and the share of real files flagged at the threshold; "
    "beside them, the AUC on its own synthesised blends.",
)
async def model_record(runtime: RuntimeDep) -> ModelRecord:
    return runtime.detector.card.record()
