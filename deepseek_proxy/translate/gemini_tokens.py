"""countTokens for the Gemini door: the Messages door's honest estimate (messages_tokens) of what the model reads once
the request is translated (thought parts dropped, built-in tools dropped, reasoning restored). Pure."""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from .errors import RequestError
from .gemini_request import translate_gemini_request
from .messages_tokens import count_chat_tokens
from .reasoning import ReasoningCodec


def count_gemini_tokens(body: Any, model: ModelConfig, profile, codec: ReasoningCodec) -> dict:
    """POST /v1beta/models/{m}:countTokens → the CountTokensResponse ({"totalTokens": N}).

    The body is `{"contents": [...]}` or `{"generateContentRequest": {...}}` (the SDK's form when a config is
    given). Raises RequestError like the translator (Gemini CLI tolerates a failing countTokens)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    inner = body.get("generateContentRequest", body.get("generate_content_request"))
    if inner is not None:
        if not isinstance(inner, dict):
            raise RequestError("generateContentRequest: an object is required", param="generateContentRequest")
        body = inner
    chat = translate_gemini_request(body, model, profile, codec, repair="fallback", upstream_stream=False)
    return {"totalTokens": count_chat_tokens(chat.body)}
