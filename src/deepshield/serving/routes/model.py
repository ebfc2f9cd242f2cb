"""GET /v1/model: the card of the model in use."""

from __future__ import annotations

from fastapi import APIRouter

from deepshield.models.card import ModelCard
from deepshield.serving.runtime import RuntimeDep

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelCard, summary="The model card of the model in use")
async def model_card(runtime: RuntimeDep) -> ModelCard:
    return runtime.detector.card
