"""Turn 2 of a Codex session with a ~1 MB history: HTTP (the whole history resent) vs the Responses WebSocket
transport (previous_response_id + the new item), same proxy, same fake upstream, interleaved rep by rep.

    python -m bench.websocket            # 1 MB history, 7 reps (~30 s); exit 1 if WebSocket is not smaller and faster
    python -m bench.websocket --smoke    # 100 KB, 2 reps: only checks that both paths work (for CI)

Both paths end in the same upstream request (the full history; the fake answers 5 tokens at once), so the
difference is what the client uploads and what the proxy parses. Time = from the first byte of the request to
`response.completed` read by the client. Bytes = what went on the wire for the request (the HTTP request head
and body; the WebSocket frame as sent, permessage-deflate on as Codex negotiates it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

from bench.run import Server, free_port, proxy_argv
from bench.scenarios import big_codex_request
from tests.ws_client import WsClient

MODEL = "deepseek-v4-flash"  # the bench fake answers this model with 5 tokens at once


def new_item(rep: int) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"And now step {rep}."}]}


def http_turn(port: int, body: dict) -> tuple[int, float]:
    payload = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    head = (f"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    started = time.perf_counter()
    conn.connect()
    conn.sock.sendall(head + payload)
    response = http.client.HTTPResponse(conn.sock)
    response.begin()
    data = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200 or b"response.completed" not in data:
        raise RuntimeError(f"HTTP turn failed: {response.status} {data[-300:]!r}")
    return len(head) + len(payload), elapsed


def ws_turns(port: int, body: dict, extra: dict) -> tuple[int, float, int]:
    """Turn 1 (the history) then turn 2 (previous_response_id + the new item) on one connection: turn 2's
    bytes on the wire, its time, and its JSON size before compression."""
    client = WsClient(port, key=None)
    try:
        client.send({"type": "response.create", **body})
        first = client.response(timeout=60)
        if first[-1]["type"] != "response.completed":
            raise RuntimeError(f"WebSocket turn 1 failed: {first[-1]}")
        turn2 = {"type": "response.create", **{k: v for k, v in body.items() if k != "input"},
                 "previous_response_id": first[-1]["response"]["id"], "input": [extra]}
        sent_before = client.bytes_sent
        started = time.perf_counter()
        client.send(turn2)
        second = client.response(timeout=60)
        elapsed = time.perf_counter() - started
        if second[-1]["type"] != "response.completed":
            raise RuntimeError(f"WebSocket turn 2 failed: {second[-1]}")
        return client.bytes_sent - sent_before, elapsed, len(json.dumps(turn2))
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="100 KB history, 2 reps: only checks both paths work")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--history-bytes", type=int, default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.smoke else 7)
    size = args.history_bytes or (100_000 if args.smoke else 1_000_000)

    base = json.loads(big_codex_request(size))
    base.update(model=MODEL, stream=True)
    # The captured history's reasoning was sealed with another proxy's secret: leave it out, the bench is about
    # transport, and both paths send the same history upstream.
    base["input"] = [item for item in base["input"] if item.get("type") != "reasoning"]
    py = sys.executable
    logdir = tempfile.mkdtemp(prefix="bench-ws-")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": logdir, "PYTHONUNBUFFERED": "1"}
    servers: list[Server] = []
    try:
        up_port = free_port()
        upstream = Server("fake_upstream", [py, "-m", "bench.fake_upstream", "--port", str(up_port)], env, up_port,
                          logdir)
        upstream.start()
        servers.append(upstream)
        port = free_port()
        config = os.path.join(logdir, "empty.toml")
        open(config, "w").close()
        argv_, why = proxy_argv(port, config)
        if argv_ is None:
            print(f"error: {why}", file=sys.stderr)
            return 2
        proxy = Server("proxy", argv_, dict(env, DEEPSEEK_API_KEY="sk-bench",
                                            DEEPSEEK_BASE_URL=f"http://127.0.0.1:{up_port}",
                                            XDG_CONFIG_HOME=os.path.join(logdir, "xdg"),
                                            XDG_STATE_HOME=os.path.join(logdir, "state"),
                                            XDG_DATA_HOME=os.path.join(logdir, "data")), port, logdir)
        proxy.start()
        servers.append(proxy)

        http_bytes, http_times, ws_bytes, ws_times, ws_json = [], [], [], [], []
        http_turn(port, dict(base, input=[*base["input"], new_item(-1)]))  # warm the worker up
        for rep in range(reps):
            extra = new_item(rep)
            # HTTP turn 2: the history, the first reply (here: none kept, Codex would add it) and the new item.
            sent, took = http_turn(port, dict(base, input=[*base["input"], extra]))
            http_bytes.append(sent)
            http_times.append(took)
            sent, took, raw = ws_turns(port, base, extra)
            ws_bytes.append(sent)
            ws_times.append(took)
            ws_json.append(raw)
    finally:
        for server in reversed(servers):
            server.stop()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.1f} ms ({min(values) * 1000:.1f}–{max(values) * 1000:.1f})"

    print(f"turn 2 with a {len(json.dumps(base)) / 1e6:.2f} MB history ({len(base['input'])} items), "
          f"{reps} interleaved reps:")
    print(f"  HTTP       request {statistics.median(http_bytes):>10,.0f} B   "
          f"time to response.completed {ms(http_times)}")
    print(f"  WebSocket  request {statistics.median(ws_bytes):>10,.0f} B   time to response.completed {ms(ws_times)}"
          f"   (frame JSON {statistics.median(ws_json):,.0f} B before permessage-deflate)")
    smaller = statistics.median(ws_bytes) < statistics.median(http_bytes)
    faster = statistics.median(ws_times) < statistics.median(http_times)
    print(f"  WebSocket/HTTP: bytes {statistics.median(ws_bytes) / statistics.median(http_bytes):.4f}, "
          f"time {statistics.median(ws_times) / statistics.median(http_times):.2f}")
    if args.smoke:
        return 0
    return 0 if smaller and faster else 1


if __name__ == "__main__":
    sys.exit(main())
