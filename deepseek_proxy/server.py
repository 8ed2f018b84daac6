"""Gunicorn settings for the proxy, shipped inside the package so `deepseek-proxy serve` works from a plain
`pip install`. deploy/gunicorn.conf.py imports the same settings for deployments that call gunicorn directly.

gevent workers: one OS process holds thousands of open streams, each a greenlet waiting on its upstream socket.
The app is created inside each worker, after gevent has patched the standard library, so every socket the
upstream Session opens is cooperative.
"""

from __future__ import annotations

import logging
import math
import sys

from .config import Config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(level: str) -> None:
    root = logging.getLogger("deepseek_proxy")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def on_starting(server) -> None:
    """In the master, before any worker forks: where the workers' Prometheus samples go (ops/metrics.py)."""
    from .config import default_state_dir
    from .ops.metrics import prepare_multiprocess_dir

    try:
        prepare_multiprocess_dir(default_state_dir())
    except OSError as exc:  # metrics are worth no failed start: each worker then reports only its own
        logging.getLogger("deepseek_proxy").warning("metrics: no multi-process directory (%s); /metrics shows the "
                                                    "worker that answers the scrape", exc)


def child_exit(server, worker) -> None:
    from .ops.metrics import worker_exited

    worker_exited(worker.pid)


def on_exit(server) -> None:
    from .config import default_state_dir
    from .ops.metrics import remove_multiprocess_dir

    remove_multiprocess_dir(default_state_dir())


def gunicorn_settings(config: Config) -> dict:
    return {
        "bind": [f"[{config.server.host}]:{config.server.port}" if ":" in config.server.host
                 else f"{config.server.host}:{config.server.port}"],
        # gevent's own WSGI server inside gunicorn's gevent worker ("gevent_pywsgi"): measured 12% more
        # requests/s and 12% less CPU per request than gunicorn's HTTP layer under gevent
        # (python -m bench.run --only a,c500,d); worker.py trims its write path for streams.
        "worker_class": "deepseek_proxy.worker.StreamingWorker",
        "workers": config.server.workers,
        "worker_connections": config.server.worker_connections,
        # For async workers `timeout` is a heartbeat, not a request limit: long streams are fine.
        "timeout": 120,
        # The worker runs the stop itself (worker.py): the grace period for open streams, then up to 3 s for
        # their final events. The arbiter SIGKILLs a worker still there after graceful_timeout, so it gets more.
        "graceful_timeout": math.ceil(config.server.shutdown_grace_seconds) + 5,
        # Not read by gevent's WSGI server; worker.py closes idle connections after server.idle_timeout. Set
        # the same so that gunicorn's own printout of its settings tells the truth.
        "keepalive": math.ceil(config.server.idle_timeout),
        "loglevel": config.server.log_level,
        "accesslog": None,  # the proxy logs one line per request itself, and never a header
        "errorlog": "-",
        "proc_name": "deepseek-proxy",
        # Request bodies are read by Flask with MAX_CONTENT_LENGTH; gunicorn only limits the head.
        "limit_request_field_size": 16384,
        # gunicorn ≥ 27 opens a control socket at one fixed path per user; two proxies (or a proxy and the
        # benchmark) would fight over it, and nothing here uses it.
        "control_socket_disable": True,
        # /metrics across workers: prometheus-client's multi-process directory (ops/metrics.py).
        "on_starting": on_starting,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }
