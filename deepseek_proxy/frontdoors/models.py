"""GET /v1/models and /v1/models/<id>: the models this proxy serves, in OpenAI's list format."""

from __future__ import annotations

from flask import Blueprint, Response

from ..config import ModelConfig
from ..jsonfast import dumps
from .common import gateway, openai_error, require_client_key

bp = Blueprint("models", __name__)
bp.before_request(require_client_key)


def _model_object(model: ModelConfig) -> dict:
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.upstream}


@bp.get("/v1/models")
@bp.get("/models")
def list_models() -> Response:
    gw = gateway()
    data = [_model_object(m) for m in gw.config.models.values()]
    return Response(dumps({"object": "list", "data": data}), mimetype="application/json")


@bp.get("/v1/models/<path:model_id>")
@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    gw = gateway()
    model = gw.config.model(model_id)
    if model is None:
        return openai_error(404, f"The model `{model_id}` does not exist or you do not have access to it.",
                            code="model_not_found", param="model")
    return Response(dumps(_model_object(model)), mimetype="application/json")
