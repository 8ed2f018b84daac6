"""A bare Flask + gevent pass-through: the reference row "bare pass-through" in the benchmark table.

It does the least a Responses -> Chat proxy can do: one pooled ``requests.Session``, forward a one-message Chat
request, and re-wrap each ``delta.content`` as a minimal ``response.output_text.delta`` event (plus created /
item added / item done / completed around them). No real translation, no sequence bookkeeping beyond a counter.
It shows what the framework stack alone costs, so the real proxy's figures can be split into "stack" and
"translation". It was also the stand-in the benchmark was developed against before the real proxy existed.

Run under gunicorn's gevent worker (that patches sockets, so ``requests`` cooperates):
    DEEPSEEK_BASE_URL=http://127.0.0.1:18080 gunicorn -k gevent -b 127.0.0.1:8790 bench.passthrough_app:app
"""

from __future__ import annotations

import os
import time

import orjson
import requests
from flask import Flask, Response, request

UPSTREAM = os.environ.get("DEEPSEEK_BASE_URL", "http://127.0.0.1:18080").rstrip("/") + "/chat/completions"
KEY = os.environ.get("DEEPSEEK_API_KEY", "sk-bench")

app = Flask(__name__)
session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4096))
session.headers.update({"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})


def _ev(kind: str, obj: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/v1/responses")
@app.post("/responses")
def responses():
    body = orjson.loads(request.get_data())
    text = "".join(p.get("text", "") for it in body.get("input", []) if isinstance(it, dict)
                   for p in (it.get("content") or []) if isinstance(p, dict))
    stream = bool(body.get("stream"))
    chat = {"model": body.get("model", "deepseek-v4-pro"), "messages": [{"role": "user", "content": text}],
            "stream": stream}
    if stream:
        chat["stream_options"] = {"include_usage": True}
    up = session.post(UPSTREAM, data=orjson.dumps(chat), stream=stream, timeout=600)
    rid = f"resp_bench_{time.time_ns():x}"
    if not stream:
        msg = up.json()["choices"][0]["message"]
        return app.response_class(orjson.dumps({
            "id": rid, "object": "response", "status": "completed", "model": chat["model"],
            "output": [{"type": "message", "id": "msg_" + rid, "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": msg.get("content") or "",
                                     "annotations": []}]}]}), mimetype="application/json")

    def gen():
        seq = 0
        mid = "msg_" + rid
        resp = {"id": rid, "object": "response", "status": "in_progress", "model": chat["model"], "output": []}
        yield _ev("response.created", {"type": "response.created", "response": resp, "sequence_number": 0})
        yield _ev("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                 "item": {"type": "message", "id": mid, "role": "assistant",
                                                          "status": "in_progress", "content": []},
                                                 "sequence_number": 1})
        seq = 2
        parts = []
        buf = b""
        try:
            for chunk in up.iter_content(chunk_size=None):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                out = []
                for line in lines:
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    d = orjson.loads(line[6:])
                    for ch in d.get("choices") or ():
                        c = ch.get("delta", {}).get("content")
                        if c:
                            parts.append(c)
                            out.append(_ev("response.output_text.delta", {
                                "type": "response.output_text.delta", "item_id": mid, "output_index": 0,
                                "content_index": 0, "delta": c, "sequence_number": seq}))
                            seq += 1
                if out:
                    yield b"".join(out)
        finally:
            up.close()
        item = {"type": "message", "id": mid, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "".join(parts), "annotations": []}]}
        yield _ev("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                                "item": item, "sequence_number": seq})
        resp = dict(resp, status="completed", output=[item])
        yield _ev("response.completed", {"type": "response.completed", "response": resp,
                                         "sequence_number": seq + 1})

    return Response(gen(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
