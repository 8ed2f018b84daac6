"""What the fixed stack costs before the proxy does any work of its own: ``python -m bench.floors``.

Two stand-ins, measured the way ``bench.run`` measures the proxy, on the same machine:

- **held streams**: gevent's WSGI server (a bare WSGI app, then the same under Flask) answers each POST with one
  SSE event and holds the stream open, as the proxy does while the upstream thinks. Printed: RSS growth per held
  stream over 1000 streams; the issue's target for the proxy is 16 KiB.
- **relay**: a gevent StreamServer copying the fake upstream's bytes to the client with no HTTP framework and no
  parsing, 500 streams x 200 tokens @ 10 ms: wall / ideal, TTFT p99 and CPU per event, next to going direct.

Nothing here is the proxy: these are floors under any proxy built on gevent (and Flask) on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time

from . import load
from .procstats import Meter, rss_bytes, tree
from .run import REPO, Server, free_port, post_json

HELD = 1000
RELAY = {"conc": 500, "ttft": 0.0, "tokens": 200, "delay": 0.01}
SMOKE_HELD = 50  # --smoke: a few seconds, for CI: checks that the stand-ins still work, measures nothing
SMOKE_RELAY = {"conc": 20, "ttft": 0.0, "tokens": 20, "delay": 0.01}


# -- the stand-in servers (run as subprocesses: python -m bench.floors --serve KIND PORT [UPSTREAM_PORT]) ---------
def serve_held(kind: str, port: int) -> None:
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from gevent.pywsgi import WSGIServer

    def events():
        yield b"event: response.created\ndata: {}\n\n"
        gevent.sleep(3600)

    def held(environ, start_response):
        if environ["PATH_INFO"] == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return events()

    app = held
    if kind == "flask":
        from flask import Flask, Response, request
        app = Flask("held")
        app.get("/healthz")(lambda: "ok")

        @app.post("/v1/responses")
        def responses():
            request.get_data()
            return Response(events(), mimetype="text/event-stream")
    WSGIServer(("127.0.0.1", port), app, log=None, backlog=4096).serve_forever()


def serve_relay(port: int, upstream_port: int) -> None:
    from gevent import monkey
    monkey.patch_all()
    from gevent.server import StreamServer

    body = json.dumps({"model": "deepseek-v4-pro", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = (b"POST /chat/completions HTTP/1.1\r\nHost: upstream\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def handle(client, _address):
        reader = client.makefile("rb")
        upstream = None
        while True:  # keep-alive: one request after another on this connection
            request_line = reader.readline()
            if not request_line:
                return
            length = 0
            while True:
                line = reader.readline()
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b"\n", b""):
                    break
            reader.read(length)
            if request_line.startswith(b"GET"):  # the runner's health check
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            if upstream is None:
                upstream = socket.create_connection(("127.0.0.1", upstream_port))
            upstream.sendall(request)
            while True:  # the upstream's response, head and chunked body, byte for byte
                data = upstream.recv(65536)
                if not data:
                    return
                client.sendall(data)
                if data.endswith(b"0\r\n\r\n"):
                    break

    StreamServer(("127.0.0.1", port), handle, backlog=4096).serve_forever()


# -- measurements ---------------------------------------------------------------------------------------------------
def held_rss_per_stream(kind: str, logdir: str, n: int = HELD) -> float:
    port = free_port()
    server = Server(f"held-{kind}", [sys.executable, "-m", "bench.floors", "--serve", kind, str(port)],
                    dict(os.environ), port, logdir)
    server.start()
    url = f"http://127.0.0.1:{port}"
    socks = []
    try:
        def open_streams(count: int) -> None:
            opened = load.open_held_streams(url, load.RESPONSES, count)
            socks.extend(opened)
            for s in opened:
                s.settimeout(30)
                assert s.recv(4096), "no event: the stream was not held"

        open_streams(20)  # lazy set-up is not counted
        time.sleep(0.5)
        before = rss_bytes(tree(server.pid()))
        open_streams(n)
        time.sleep(0.5)
        return (rss_bytes(tree(server.pid())) - before) / n / 1024
    finally:
        for s in socks:
            s.close()
        server.stop()


def relay(logdir: str, plan: dict) -> dict:
    up_port, relay_port = free_port(), free_port()
    upstream = Server("fake-upstream", [sys.executable, "-m", "bench.fake_upstream", "--port", str(up_port)],
                      dict(os.environ), up_port, logdir)
    relay_server = Server("relay", [sys.executable, "-m", "bench.floors", "--serve", "relay", str(relay_port),
                                    str(up_port)], dict(os.environ), relay_port, logdir)
    upstream.start()
    try:
        post_json(up_port, "/_bench/scenario", {k: plan[k] for k in ("ttft", "tokens", "delay")})
        relay_server.start()
        ideal = plan["ttft"] + plan["delay"] * (plan["tokens"] - 1)
        out = {}
        for name, port, root in (("direct", up_port, None), ("relay", relay_port, relay_server.pid())):
            load.run(f"http://127.0.0.1:{port}", load.CHAT, concurrency=10, total=10)  # warm
            with Meter(root) as meter:
                results, _ = load.run(f"http://127.0.0.1:{port}", load.CHAT, concurrency=plan["conc"],
                                      total=plan["conc"], timeout=60)
            ok = [r for r in results if r.ok]
            wall = max(r.done for r in ok) - min(r.start for r in results)
            ttft = [r.ttft for r in ok if r.ttft is not None]
            out[name] = {"completed": len(ok), "wall_ideal": wall / ideal, "ttft_p99_ms": load.pct(ttft, 99) * 1000,
                         "cpu_us_per_event": (meter.cpu / sum(r.deltas for r in ok) * 1e6) if root else None}
        return out
    finally:
        relay_server.stop()
        upstream.stop()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds: only checks that every stand-in works")
    ap.add_argument("--serve", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        kind, port, *rest = args.serve
        if kind == "relay":
            serve_relay(int(port), int(rest[0]))
        else:
            serve_held(kind, int(port))
        return
    held, plan = (SMOKE_HELD, SMOKE_RELAY) if args.smoke else (HELD, RELAY)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.chdir(REPO)
    logdir = tempfile.mkdtemp(prefix="deepseek-proxy-floors-")
    print(f"held streams ({held}), RSS growth per stream (the proxy's target: 16 KiB):")
    for kind in ("bare", "flask"):
        print(f"  gevent WSGI server, {'bare WSGI app' if kind == 'bare' else 'Flask app'}: "
              f"{held_rss_per_stream(kind, logdir, held):.1f} KiB")
    print(f"relay, {plan['conc']} streams x {plan['tokens']} tokens @ {plan['delay'] * 1000:.0f} ms "
          f"(the proxy's target at 500: wall <= 1.2x ideal, TTFT p99 <= 400 ms):")
    incomplete = 0
    for name, r in relay(logdir, plan).items():
        incomplete += plan["conc"] - r["completed"]
        cpu = f", {r['cpu_us_per_event']:.1f} us CPU per event" if r["cpu_us_per_event"] else ""
        print(f"  {name:6s}: {r['completed']}/{plan['conc']} done, wall/ideal {r['wall_ideal']:.2f}, "
              f"TTFT p99 {r['ttft_p99_ms']:.0f} ms{cpu}")
    print(f"(logs: {logdir})")
    if incomplete:
        sys.exit(f"{incomplete} relayed stream(s) did not complete")


if __name__ == "__main__":
    main()
