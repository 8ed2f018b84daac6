"""CPU seconds and peak RSS of a process tree, read straight from /proc (Linux; no psutil needed).

Why the whole tree: ``deepseek-proxy serve`` runs a gunicorn master that forks gevent workers; the work happens in
the workers, and their number is the proxy's own choice. CPU = utime + stime of every live process in the tree plus
the cutime + cstime of reaped children (so a worker that exits mid-run is still counted). Resolution is one clock
tick (10 ms); the scenarios burn far more than that. RSS is summed over the tree (shared pages of forked workers
count once per process, as ``ps`` shows them); a sampler thread reads it every 50 ms and keeps the peak.
"""

from __future__ import annotations

import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
    except OSError:
        return None
    # comm (field 2) may contain spaces: split after the closing parenthesis
    return data[data.rindex(")") + 2:].split()


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f:
                kids.setdefault(int(f[1]), []).append(int(name))  # f[1] = ppid (field 4)
    return kids


def tree(root: int) -> list[int]:
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def cpu_split(pids) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids``, reaped children included."""
    user = system = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            # fields 14-17 (1-based) = utime stime cutime cstime -> indexes 11..14 after comm
            user += int(f[11]) + int(f[13])
            system += int(f[12]) + int(f[14])
    return user / _TICK, system / _TICK


def cpu_seconds(pids) -> float:
    return sum(cpu_split(pids))


def rss_bytes(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    return total


class Meter:
    """Measure a process tree over a scenario: ``with Meter(pid) as m: ...``; then m.cpu, m.peak_rss, m.rss0."""

    def __init__(self, root: int | None, interval: float = 0.05):
        self.root, self.interval = root, interval
        self.cpu = self.cpu_sys = 0.0
        self.rss0 = self.peak_rss = 0
        self.wall = 0.0

    def __enter__(self):
        if self.root is None:
            return self
        self.pids = tree(self.root)
        self.rss0 = self.peak_rss = rss_bytes(self.pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.cpu0 = cpu_split(self.pids)
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def _sample(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            n += 1
            if n % 20 == 0:  # pick up re-spawned workers once a second; a /proc scan is ~1 ms
                self.pids = tree(self.root)
            r = rss_bytes(self.pids)
            if r > self.peak_rss:
                self.peak_rss = r

    def __exit__(self, *exc):
        if self.root is None:
            return False
        self.wall = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        pids = tree(self.root)
        user, system = cpu_split(pids)
        self.cpu_sys = system - self.cpu0[1]
        self.cpu = user - self.cpu0[0] + self.cpu_sys
        self.peak_rss = max(self.peak_rss, rss_bytes(pids))
        return False


def self_cpu() -> float:
    """CPU seconds of this process (the load client runs here)."""
    t = os.times()
    return t.user + t.system


def wait_idle(roots, threshold: float = 0.1, window: float = 0.2, max_wait: float = 30.0) -> float:
    """Block until the process trees under ``roots`` together use less than ``threshold`` cores over ``window``.

    Why: a target that timed out is still working off the streams it had (the client hung up, but a server only
    notices on its next write), and that leftover work would be billed to whichever target runs next.
    Returns the seconds waited."""
    t0 = time.perf_counter()
    roots = [r for r in roots if r is not None]
    while True:
        pids = [p for r in roots for p in tree(r)]
        c0 = cpu_seconds(pids)
        time.sleep(window)
        if cpu_seconds(pids) - c0 < threshold * window or time.perf_counter() - t0 > max_wait:
            return time.perf_counter() - t0
