"""Integration-test plumbing: lines a test wants in the run's summary (shown without `-s`, so they reach CI's log)."""

from __future__ import annotations

import pytest

_SUMMARY = pytest.StashKey[list]()


@pytest.fixture()
def summary_lines(pytestconfig) -> list:
    """Append strings here; they are printed in pytest's terminal summary at the end of the run."""
    return pytestconfig.stash.setdefault(_SUMMARY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("summaries")
        for line in lines:
            terminalreporter.write_line(line)
