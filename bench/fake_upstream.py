"""A fast fake DeepSeek Chat Completions upstream for the benchmark (loopback only).

Why hand-rolled asyncio and not Flask/gevent.pywsgi: the fake shares two cores with the proxy and the load
client, so every microsecond it spends per chunk is stolen from the thing we measure. A raw
``asyncio.Protocol`` with a minimal HTTP/1.1 parser costs a few microseconds per written chunk; a WSGI stack
costs tens. Everything a stream sends is pre-encoded once per scenario (``Plan``), so a request does no JSON
work at all, and streams that are due in the same millisecond share one timer (``Ticker``) instead of one
asyncio timer each.

The scenario is server-wide state, set with ``POST /_bench/scenario`` (JSON, see ``DEFAULTS``) because the proxy
forwards neither arbitrary headers nor unknown body fields. ``GET /_bench/stats`` reports what was served.

Requests for model ``deepseek-v4-flash`` always get a short instant reply (``WARM``), whatever the scenario: the
runner warms targets with it without waiting out a slow scenario.

Routes: ``POST /chat/completions`` and ``POST /v1/chat/completions`` (stream or not, from the body's
``stream``), ``POST|GET /_bench/scenario``, ``GET /_bench/stats``, ``GET /healthz``.

Run: ``python -m bench.fake_upstream --port 18080`` (prints ``LISTENING <port>`` when ready).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

try:  # orjson only speeds up building plans and parsing request bodies; stdlib json works too
    import orjson

    def _dumps(obj) -> bytes:
        return orjson.dumps(obj)

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    def _dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads


DEFAULTS = {
    "ttft": 0.0,          # seconds from request to the first chunk (headers are sent at once, like DeepSeek)
    "tokens": 20,         # content tokens (one chunk each)
    "delay": 0.0,         # seconds between chunks; 0 = write the whole stream at once
    "reasoning": 0,       # reasoning_content tokens before the content
    "tools": 0,           # tool calls after the content
    "tool_arg_chunks": 8,  # argument fragments per tool call
    "usage": 1,           # send the usage chunk (choices: []) before [DONE]
    "model": "deepseek-v4-pro",
    "keepalive": 0,       # ": keep-alive" comment lines sent right after the headers (DeepSeek does this while queued)
}

# Token texts cycle through this list; a few multi-byte ones so UTF-8 handling is exercised.
WORDS = [" the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", ",", " and", " then",
         " runs", " é", " 中文", " back", "."]

HEAD_STREAM = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
               b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")


def _frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk. Each SSE event gets its own chunk, as a server that flushes per token sends it."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(obj) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


class Plan:
    """Everything one response sends for a scenario, encoded once and shared by all requests."""

    def __init__(self, sc: dict):
        self.sc = sc
        self.ttft = float(sc["ttft"])
        self.delay = float(sc["delay"])
        created = int(time.time())
        rid = "chatcmpl-bench"
        model = sc["model"]

        def chunk(delta, finish=None):
            return _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "system_fingerprint": "fp_bench",
                         "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

        n_reason, n_tok, n_tools = int(sc["reasoning"]), int(sc["tokens"]), int(sc["tools"])
        ticks: list[bytes] = []  # one entry per inter-token step: the frames written at that moment
        reasoning_text, content_text = [], []
        # DeepSeek opens with the role; in thinking mode the first reasoning chunk is "".
        first = chunk({"role": "assistant", "content": None, "reasoning_content": ""} if n_reason
                      else {"role": "assistant", "content": ""})
        pending = _frame(first)
        for i in range(n_reason):
            w = WORDS[i % len(WORDS)]
            reasoning_text.append(w)
            ticks.append(pending + _frame(chunk({"content": None, "reasoning_content": w})))
            pending = b""
        for i in range(n_tok):
            w = WORDS[i % len(WORDS)]
            content_text.append(w)
            ticks.append(pending + _frame(chunk({"content": w})))
            pending = b""
        tool_calls = []
        for t in range(n_tools):
            call_id = f"call_bench_{t}"
            args = json.dumps({"cmd": ["bash", "-lc", f"echo {t} && ls -la /tmp"], "workdir": "/tmp"})
            tool_calls.append({"id": call_id, "type": "function",
                               "function": {"name": "exec_command", "arguments": args}})
            ticks.append(pending + _frame(chunk({"tool_calls": [{"index": t, "id": call_id, "type": "function",
                                                                  "function": {"name": "exec_command",
                                                                               "arguments": ""}}]})))
            pending = b""
            k = max(1, int(sc["tool_arg_chunks"]))
            step = -(-len(args) // k)
            for j in range(0, len(args), step):
                ticks.append(_frame(chunk({"tool_calls": [{"index": t,
                                                           "function": {"arguments": args[j:j + step]}}]})))
        finish = "tool_calls" if n_tools else "stop"
        tail = pending + _frame(chunk({}, finish))
        prompt = 1000
        completion = n_reason + n_tok + n_tools * 20
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": n_reason},
                 "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": prompt}
        if int(sc["usage"]):
            tail += _frame(_sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "system_fingerprint": "fp_bench", "choices": [], "usage": usage}))
        tail += _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        if ticks:
            ticks[-1] += tail
        else:
            ticks.append(tail)
        self.ticks = ticks
        self.head = HEAD_STREAM + b"".join(_frame(b": keep-alive\n\n") for _ in range(int(sc["keepalive"])))
        self.whole = b"".join(ticks)  # used when delay == 0: one write

        msg = {"role": "assistant", "content": "".join(content_text)}
        if n_reason:
            msg["reasoning_content"] = "".join(reasoning_text)
        if tool_calls:
            msg["tool_calls"] = tool_calls
        body = _dumps({"id": rid, "object": "chat.completion", "created": created, "model": model,
                       "system_fingerprint": "fp_bench",
                       "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
                       "usage": usage})
        self.nonstream = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          b"Connection: keep-alive\r\n\r\n%s" % (len(body), body))
        # A non-stream reply takes as long as the stream would have.
        self.nonstream_wait = self.ttft + self.delay * max(0, len(ticks) - 1)


class Ticker:
    """Fires due streams in 1 ms buckets: one asyncio timer per bucket rather than one per stream-chunk."""

    def __init__(self, loop):
        self.loop = loop
        self.buckets: dict[int, list] = {}

    def add(self, when: float, stream) -> None:
        key = int(when * 1000.0) + 1  # round up so nothing fires early
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = []
            self.loop.call_at(key / 1000.0, self._fire, key)
        b.append(stream)

    def _fire(self, key: int) -> None:
        for st in self.buckets.pop(key, ()):
            st.step()


class Stream:
    __slots__ = ("proto", "plan", "i", "due")

    def __init__(self, proto, plan: Plan, start: float):
        self.proto, self.plan, self.i = proto, plan, 0
        self.due = start + plan.ttft

    def step(self) -> None:
        proto = self.proto
        if proto.closed:
            STATS["aborted"] += 1
            return
        plan = self.plan
        proto.transport.write(plan.ticks[self.i])
        self.i += 1
        if self.i < len(plan.ticks):
            self.due += plan.delay
            TICKER.add(self.due, self)
        else:
            STATS["events"] += len(plan.ticks)
            proto.finish_response()


STATS = {"requests": 0, "streams": 0, "nonstream": 0, "events": 0, "aborted": 0, "bad_requests": 0,
         "last_body_bytes": 0, "stream_options_seen": 0, "connections": 0}
SCENARIO = dict(DEFAULTS)
PLAN: Plan | None = None
WARM_MODEL = "deepseek-v4-flash"
WARM_PLAN = Plan(dict(DEFAULTS, tokens=5, model=WARM_MODEL))
TICKER: Ticker | None = None


def set_scenario(update: dict) -> dict:
    global PLAN, SCENARIO
    sc = dict(DEFAULTS)
    sc.update({k: v for k, v in update.items() if k in DEFAULTS})
    SCENARIO, PLAN = sc, Plan(sc)
    return sc


def _json_response(obj, status=b"200 OK") -> bytes:
    body = _dumps(obj)
    return (b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n%s" % (status, len(body), body))


class HTTPProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection (clients here don't pipeline)."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        self.busy = False
        self.closed = False
        STATS["connections"] += 1

    def connection_lost(self, exc):
        self.closed = True

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self._try_request()

    def _try_request(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = buf[:end].decode("latin-1").split("\r\n")
        try:
            method, target, _ = head[0].split(" ", 2)
        except ValueError:
            self.transport.close()
            return
        clen = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                clen = int(value.strip())
        if len(buf) < end + 4 + clen:
            return  # wait for the rest of the body
        body = buf[end + 4:end + 4 + clen]
        self.buf = buf[end + 4 + clen:]
        self.busy = True
        self._dispatch(method, target.split("?", 1)[0], body)

    def finish_response(self):
        self.busy = False
        if self.buf and not self.closed:
            self._try_request()

    def _reply(self, data: bytes):
        self.transport.write(data)
        self.finish_response()

    def _dispatch(self, method, path, body):
        STATS["requests"] += 1
        if path.endswith("/chat/completions") and method == "POST":
            try:
                req = _loads(body)
            except ValueError:
                STATS["bad_requests"] += 1
                self._reply(_json_response({"error": {"message": "bad json", "type": "invalid_request_error",
                                                      "param": None, "code": "invalid_request_error"}},
                                           b"400 Bad Request"))
                return
            STATS["last_body_bytes"] = len(body)
            if "stream_options" in req:
                STATS["stream_options_seen"] += 1
            plan = WARM_PLAN if req.get("model") == WARM_MODEL else PLAN
            now = time.monotonic()  # asyncio's loop.time() is time.monotonic()
            if req.get("stream"):
                STATS["streams"] += 1
                self.transport.write(plan.head)
                if plan.delay <= 0.0:
                    # Whole stream in one write once the first token is due.
                    if plan.ttft > 0:
                        LOOP.call_later(plan.ttft, self._write_whole, plan)
                    else:
                        self._write_whole(plan)
                else:
                    st = Stream(self, plan, now)
                    TICKER.add(st.due, st)
            else:
                STATS["nonstream"] += 1
                if plan.nonstream_wait > 0:
                    LOOP.call_later(plan.nonstream_wait, self._reply_if_open, plan.nonstream)
                else:
                    self._reply(plan.nonstream)
        elif path == "/_bench/scenario":
            if method == "POST":
                try:
                    sc = set_scenario(_loads(body) if body else {})
                except (ValueError, TypeError, KeyError) as e:
                    self._reply(_json_response({"error": str(e)}, b"400 Bad Request"))
                    return
                self._reply(_json_response(sc))
            else:
                self._reply(_json_response(SCENARIO))
        elif path == "/_bench/stats":
            self._reply(_json_response(STATS))
        elif path in ("/healthz", "/"):
            self._reply(_json_response({"ok": True}))
        else:
            self._reply(_json_response({"error": {"message": "not found: " + path}}, b"404 Not Found"))

    def _write_whole(self, plan):
        if self.closed:
            STATS["aborted"] += 1
            return
        self.transport.write(plan.whole)
        STATS["events"] += len(plan.ticks)
        self.finish_response()

    def _reply_if_open(self, data):
        if not self.closed:
            self._reply(data)


LOOP: asyncio.AbstractEventLoop | None = None


async def serve(host: str, port: int, tls_port: int | None = None, cert: str | None = None,
                key: str | None = None) -> None:
    global LOOP, TICKER
    LOOP = asyncio.get_running_loop()
    TICKER = Ticker(LOOP)
    set_scenario({})
    server = await LOOP.create_server(HTTPProtocol, host, port, backlog=4096, reuse_address=True)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    if tls_port is not None:
        # Same handler behind TLS, like the real (HTTPS) DeepSeek: shows what a fresh vs a pooled upstream
        # connection costs the proxy. asyncio's TLS costs the fake more CPU per chunk than plain HTTP.
        import ssl
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        tls = await LOOP.create_server(HTTPProtocol, host, tls_port, backlog=4096, reuse_address=True, ssl=ctx)
        print(f"LISTENING_TLS {tls.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--tls-port", type=int, default=None, help="also serve HTTPS here (needs --cert and --key)")
    ap.add_argument("--cert", default=None)
    ap.add_argument("--key", default=None)
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("the fake upstream only listens on loopback")
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    try:
        asyncio.run(serve(args.host, args.port, args.tls_port, args.cert, args.key))
    except KeyboardInterrupt:
        pass
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
