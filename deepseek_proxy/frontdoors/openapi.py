"""GET /openapi.json: an OpenAPI 3.1 description of what this proxy serves.

The request body of POST /v1/responses is the very schema the front door validates with (responses_validation),
so the description cannot drift from the check. The document is what an HTTP fuzzer (tests/integration/
test_fuzz.py, schemathesis) generates its requests from.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from .. import __version__
from ..jsonfast import dumps
from .chat_validation import CHAT_REQUEST_SCHEMA
from .common import gateway
from .responses_validation import RESPONSES_REQUEST_SCHEMA

bp = Blueprint("openapi", __name__)

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}},
    }},
}
_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                   "owned_by": {"type": "string"}},
}
_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "status", "output", "model"],
    "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "status": {"type": "string"},
                   "model": {"type": "string"}, "output": {"type": "array", "items": {"type": "object"}},
                   "usage": {"type": ["object", "null"]}},
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, dict]:
    words = {400: "the request is invalid (`param` names the parameter)", 401: "a client key is required",
             404: "no such model or path", 413: "the body is larger than server.max_body_mb",
             429: "the upstream's rate limit (see retry-after)", 502: "the upstream failed or is unreachable",
             503: "not ready, or the upstream is overloaded", 504: "the upstream did not answer in time"}
    return {str(status): _json({"$ref": "#/components/schemas/Error"}, words[status]) for status in statuses}


def _request_schema(validated_by: dict[str, Any], model_ids: list[str]) -> dict[str, Any]:
    schema = {key: value for key, value in validated_by.items() if key != "$schema"}
    if model_ids:  # the models this proxy serves; any other is a 404
        schema["properties"] = {**schema["properties"], "model": {"type": "string", "enum": model_ids}}
    return schema


def openapi_document(model_ids: list[str] | None = None) -> dict[str, Any]:
    """The document; with `model_ids`, the request's `model` lists the models served."""
    secured: list[dict[str, list]] = [{"bearer": []}, {}]  # a key only when server.client_keys is set
    return {
        "openapi": "3.1.0",
        "info": {"title": "deepseek-proxy", "version": __version__,
                 "description": "The OpenAI Responses and Chat Completions APIs in front of DeepSeek and other "
                                "Chat Completions upstreams."},
        "servers": [{"url": "/"}],
        "paths": {
            "/v1/responses": {"post": {
                "operationId": "createResponse",
                "summary": "Create a model response, streamed (stream: true) or not",
                "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/CreateResponse"}}}},
                "responses": {
                    "200": {"description": "the Response object, or its events as server-sent events",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Response"}},
                                        "text/event-stream": {"schema": {"type": "string"}}}},
                    **_errors(400, 401, 404, 413, 429, 502, 503, 504),
                },
            }},
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion",
                "summary": "Create a chat completion, streamed (stream: true) or not",
                "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/CreateChatCompletion"}}}},
                "responses": {
                    "200": {"description": "the chat completion, or its chunks as server-sent events",
                            "content": {"application/json": {"schema": {"type": "object"}},
                                        "text/event-stream": {"schema": {"type": "string"}}}},
                    **_errors(400, 401, 404, 413, 429, 502, 503, 504),
                },
            }},
            "/v1/models": {"get": {
                "operationId": "listModels",
                "summary": "The models this proxy serves",
                "security": secured,
                "responses": {
                    "200": _json({"type": "object", "required": ["object", "data"],
                                  "properties": {"object": {"const": "list"},
                                                 "data": {"type": "array",
                                                          "items": {"$ref": "#/components/schemas/Model"}}}},
                                 "the model list"),
                    **_errors(401),
                },
            }},
            "/v1/models/{model_id}": {"get": {
                "operationId": "retrieveModel",
                "summary": "One model",
                "security": secured,
                "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"$ref": "#/components/schemas/Model"}, "the model"),
                              **_errors(401, 404)},
            }},
            "/v1/codex/models.json": {"get": {
                "operationId": "codexModelCatalog",
                "summary": "The Codex CLI model catalog (model_catalog_url)",
                "security": secured,
                "parameters": [{"name": "client_version", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}, "the catalog"), **_errors(401, 503)},
            }},
            "/healthz": {"get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers",
                "responses": {"200": _json({"type": "object", "properties": {"status": {"const": "ok"}}}, "alive")},
            }},
            "/readyz": {"get": {
                "operationId": "readyz",
                "summary": "Readiness: every upstream in use has a key (deep=1: and answers)",
                "parameters": [{"name": "deep", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}, "ready"), "503": _json({"type": "object"}, "not ready")},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"CreateResponse": _request_schema(RESPONSES_REQUEST_SCHEMA, list(model_ids or [])),
                        "CreateChatCompletion": _request_schema(CHAT_REQUEST_SCHEMA, list(model_ids or [])),
                        "Response": _RESPONSE, "Model": _MODEL, "Error": _ERROR},
        },
    }


_documents: dict[int, bytes] = {}  # per Config object (one per worker): built once


@bp.get("/openapi.json")
def openapi_json() -> Response:
    config = gateway().config
    document = _documents.get(id(config))
    if document is None:
        document = _documents[id(config)] = dumps(openapi_document(list(config.models)))
    return Response(document, mimetype="application/json")
