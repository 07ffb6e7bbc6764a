"""GET /v1/models, /health and /metrics (Prometheus text). Public: they name the model and count
requests, nothing about users."""

from fastapi import APIRouter
from fastapi.responses import Response

from almr.serve.deps import State
from almr.serve.routes.common import now

router = APIRouter()


@router.get("/v1/models")
async def models(state: State) -> dict:
    model = {"id": state.engine.model_name, "object": "model", "created": now(), "owned_by": "almr"}
    return {"object": "list", "data": [model]}


@router.get("/health")
async def health(state: State) -> dict:
    return {
        "status": "ok",
        "model": state.engine.model_name,
        "engine": state.engine.kind,
        "queued": state.engine.queued(),
    }


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")
