"""Stand-alone benchmark of deepseek-proxy (issue #4): ``python -m bench.run``. Not part of the test suite."""
