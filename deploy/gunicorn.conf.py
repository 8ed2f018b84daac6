"""Gunicorn config for deployments that call gunicorn directly (e.g. a team server behind nginx):

    gunicorn -c deploy/gunicorn.conf.py 'deepseek_proxy.app:create_app()'

The settings are the package's own (deepseek_proxy/server.py), the same ones `deepseek-proxy serve` uses, fed
from the same configuration (DEEPSEEK_PROXY_CONFIG, environment variables). Override any of them below.
"""

from deepseek_proxy.config import load_config
from deepseek_proxy.server import configure_logging, gunicorn_settings

_config = load_config()
globals().update(gunicorn_settings(_config))


def post_worker_init(worker):
    configure_logging(_config.server.log_level)
