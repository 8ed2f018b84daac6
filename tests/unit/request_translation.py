"""What the request translators' unit tests share (Responses, Messages, Gemini → Chat Completions): the codec, the
profiles and models they translate for, the captured requests to run, and the two checks every translation gets:
it leaves the client's body as it was, and the fake DeepSeek's own rule checker accepts what comes out."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepseek_proxy.config import ModelConfig, default_models
from deepseek_proxy.jsonfast import dumps
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import FAKE_KEY
from tests.fakes.fake_deepseek import DeepSeekRules

CODEC = ReasoningCodec(b"unit-test-secret")
DEEPSEEK = profile_named("deepseek")
OPENAI = profile_named("openai")
MODELS = default_models()
PRO = MODELS["deepseek-v4-pro"]
VISION = ModelConfig(id="vision", upstream="local", upstream_model="gpt-vision", images=True, thinking=False)


def translated_untouched(translator: Callable[..., Any], body: Any, *args, **kwargs) -> Any:
    """`translator(body, *args, **kwargs)`, checking that it did not modify the client's body."""
    original = copy.deepcopy(body)
    chat = translator(body, *args, **kwargs)
    assert body == original, "the translator must not modify the client's body"
    return chat


def check_with_deepseek_rules(chat_body: dict) -> dict:
    """The fake DeepSeek's own rule checker, on the exact bytes the proxy would send."""
    return DeepSeekRules(FAKE_KEY, thinking_default=True).check_chat(dumps(chat_body), "/chat/completions")


def captured_requests_with(folder: Path, field: str) -> list[str]:
    """The names of the captured requests in `folder` (`NAME.json` holding the request's `body`) whose body has
    `field`, sorted."""
    def body_of(path: Path) -> dict:
        capture = json.loads(path.read_text())
        return (capture.get("body") or {}) if isinstance(capture, dict) else {}
    return sorted(path.stem for path in folder.glob("*.json") if field in body_of(path))
