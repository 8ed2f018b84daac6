"""What reusing upstream connections saves against an HTTPS upstream (real DeepSeek is HTTPS):
``python -m bench.tls_reuse``.

The proxy's upstream client (deepseek_proxy.upstream.client.UpstreamClient, in this process) sends the same
requests to the fake upstream over TLS, one at a time, two ways, interleaved:

- **pooled**: one client, as the proxy runs: the TLS connection is made once and reused;
- **fresh**: the same client with its pool emptied after every request, so every request pays TCP connect +
  TLS handshake (and, because the fake's certificate is trusted through REQUESTS_CA_BUNDLE, loading that file
  into a new TLS context, as it would for a proxy configured with a private CA).

Printed per way: time to the upstream's response headers (what a request waits before anything can stream) and
CPU per request in this process, medians over the reps. Loopback has no network round trip; over the internet a
fresh connection also costs two to three round trips to DeepSeek (TCP + TLS 1.3) on top of these figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from .run import REPO, Server, free_port, post_json, self_signed_cert


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per way and rep")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="a few requests: only checks that it works (for CI)")
    args = ap.parse_args(argv)
    n, reps = (5, 1) if args.smoke else (args.requests, args.reps)

    # The upstream client is the proxy's own; imported here so `--help` works without the package installed.
    from deepseek_proxy.config import UpstreamConfig
    from deepseek_proxy.upstream.client import UpstreamClient

    logdir = tempfile.mkdtemp(prefix="deepseek-proxy-tls-")
    cert, key = self_signed_cert(logdir)
    port, tls_port = free_port(), free_port()
    upstream = Server("fake-upstream", [sys.executable, "-m", "bench.fake_upstream", "--port", str(port),
                                        "--tls-port", str(tls_port), "--cert", cert, "--key", key],
                      dict(os.environ), port, logdir)
    os.chdir(REPO)
    upstream.start()
    try:
        post_json(port, "/_bench/scenario", {"ttft": 0.0, "tokens": 5, "delay": 0.0})
        config = UpstreamConfig(name="bench", base_url=f"https://127.0.0.1:{tls_port}", api_key="env:KEY")
        env = {"KEY": "sk-bench", "REQUESTS_CA_BUNDLE": cert}
        body = {"model": "deepseek-v4-pro", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        pooled, fresh = UpstreamClient(config, env=env), UpstreamClient(config, env=env)

        def one(client) -> float:
            start = time.perf_counter()
            response = client.post_chat(body)  # returns once the upstream's headers are in
            headers_at = time.perf_counter() - start
            assert b"[DONE]" in response.content, "incomplete upstream reply"
            response.close()
            return headers_at

        results: dict[str, dict[str, list[float]]] = {"pooled": {"headers": [], "cpu": []},
                                                      "fresh": {"headers": [], "cpu": []}}
        one(pooled)  # the pooled connection is made here, outside the measurement
        for _ in range(reps):
            for way in ("pooled", "fresh"):
                cpu0 = time.process_time()
                waits = []
                for _ in range(n):
                    waits.append(one(pooled if way == "pooled" else fresh))
                    if way == "fresh":
                        fresh.session.close()  # drops the pooled connection; the next request opens a new one
                results[way]["cpu"].append((time.process_time() - cpu0) / n)
                results[way]["headers"].append(statistics.median(waits))
    finally:
        upstream.stop()

    print(f"upstream over TLS (loopback, self-signed), {n} sequential requests x {reps} interleaved reps:")
    for way, r in results.items():
        print(f"  {way:6s}: to response headers {statistics.median(r['headers']) * 1000:.2f} ms, "
              f"client CPU {statistics.median(r['cpu']) * 1000:.2f} ms per request")
    saved = statistics.median(results["fresh"]["headers"]) - statistics.median(results["pooled"]["headers"])
    print(f"  reuse saves {saved * 1000:.2f} ms per request on loopback "
          "(plus 2-3 network round trips to a real upstream)")


if __name__ == "__main__":
    main()
