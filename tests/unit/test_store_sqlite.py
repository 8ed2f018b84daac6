"""What only the SQLite backend promises: the file (WAL, private), restarts, several processes at once (as gunicorn
workers share it), a fork after first use, and greenlets that keep running while one waits for the write lock."""

from __future__ import annotations

import multiprocessing
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deepseek_proxy.store import StoredResponse, StoreError, StoreUnavailable
from deepseek_proxy.store.sqlite import SCHEMA_VERSION, SQLiteStore

LIMITS = {"ttl_seconds": 86400.0, "reasoning_ttl_seconds": 3600.0, "max_response_bytes": 4 * 1024 * 1024}


def record(response_id: str, previous: str | None = None, text: str = "hi") -> StoredResponse:
    output = [{"id": f"msg_{response_id}", "type": "message", "role": "assistant",
               "content": [{"type": "output_text", "text": text}]}]
    return StoredResponse(id=response_id, response={"id": response_id, "object": "response", "output": output},
                          input_items=[{"id": f"in_{response_id}", "type": "message", "role": "user",
                                        "content": [{"type": "input_text", "text": text}]}],
                          model="deepseek-v4-pro", created_at=1_700_000_000, previous_response_id=previous)


def test_the_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "new" / "dir" / "store.db"
    store = SQLiteStore(path, **LIMITS)
    store.put_response(record("resp_1"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()


def test_data_survives_a_restart(tmp_path):
    path = tmp_path / "store.db"
    first = SQLiteStore(path, **LIMITS)
    first.put_response(record("resp_1"))
    first.put_response(record("resp_2", previous="resp_1"))
    first.put_reasoning("call_1", "kept")
    first.close()
    # A new process, as after `deepseek-proxy serve` is restarted.
    script = textwrap.dedent(f"""
        from deepseek_proxy.store.sqlite import SQLiteStore
        store = SQLiteStore({str(path)!r}, ttl_seconds=86400.0, reasoning_ttl_seconds=3600.0,
                            max_response_bytes=1 << 22)
        conversation = store.get_conversation("resp_2")
        print([r.id for r in conversation], store.get_reasoning("call_1"), store.get_item("msg_resp_1")["id"])
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['resp_1',", "'resp_2']", "kept", "msg_resp_1"]
    reopened = SQLiteStore(path, **LIMITS)
    assert reopened.get_response("resp_2").previous_response_id == "resp_1"
    reopened.close()


def test_a_file_from_a_newer_version_is_refused_clearly(tmp_path):
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreUnavailable, match="newer deepseek-proxy"):
        SQLiteStore(path, **LIMITS).get_response("resp_1")


def test_a_version_1_file_gains_the_team_tables_and_keeps_its_responses(tmp_path):
    """A store written before issue 12 (schema 1: responses, items, reasoning) is upgraded in place."""
    from deepseek_proxy.store import ClientKeyRecord
    from deepseek_proxy.store import sqlite as store_sqlite

    path = tmp_path / "store.db"
    version_1 = store_sqlite.SCHEMA.split("-- Issue 12")[0]
    with sqlite3.connect(path) as conn:
        conn.executescript(version_1)
        conn.execute("PRAGMA user_version = 1")
    old = SQLiteStore(path, **LIMITS)
    old.put_response(record("resp_1"))
    old.close()
    with sqlite3.connect(path) as conn:  # as a version 1 proxy left it
        conn.execute("DROP TABLE client_keys")
        conn.execute("PRAGMA user_version = 1")
    upgraded = SQLiteStore(path, **LIMITS)
    assert upgraded.get_response("resp_1") is not None
    upgraded.put_client_key(ClientKeyRecord(name="alice", key_hash="a" * 64, created_at=1.0))
    assert upgraded.get_client_key("alice").key_hash == "a" * 64
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    upgraded.close()


def _worker(store: SQLiteStore, worker: int, count: int, errors) -> None:
    try:
        for n in range(count):
            own = f"resp_{worker}_{n}"
            store.put_response(record(own, previous=f"resp_{worker}_{n - 1}" if n else None, text=own))
            store.put_reasoning(f"call_{worker}_{n}", own)
            assert store.get_response(own).response["id"] == own
            other = store.get_response(f"resp_{(worker + 1) % 4}_{n // 2}")  # another process's, maybe not yet
            assert other is None or other.output_items[0]["content"][0]["text"] == other.id
        assert len(store.get_conversation(f"resp_{worker}_{count - 1}")) == count
    except (AssertionError, StoreError) as exc:  # reported to the parent, which fails the test with it
        errors.put(f"worker {worker}: {exc!r}")


def test_several_processes_share_the_file(tmp_path):
    """Four processes forked after the parent used the store (so each must open its own connection) write and
    read at once, as gunicorn workers do; nothing is lost or refused."""
    store = SQLiteStore(tmp_path / "store.db", **LIMITS)
    store.put_response(record("resp_parent"))  # the parent's connection exists before the fork
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    count = 40
    workers = [context.Process(target=_worker, args=(store, w, count, errors)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    reported = [errors.get_nowait() for _ in range(errors.qsize())] if not errors.empty() else []
    assert reported == [] and [p.exitcode for p in workers] == [0, 0, 0, 0]
    for w in range(4):
        for n in range(count):
            assert store.get_response(f"resp_{w}_{n}") is not None
            assert store.get_reasoning(f"call_{w}_{n}") == f"resp_{w}_{n}"
    assert store.get_response("resp_parent") is not None  # the parent's connection still works
    store.close()


GREENLETS = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import sqlite3, sys, gevent
    from deepseek_proxy.store import StoredResponse
    from deepseek_proxy.store.sqlite import SQLiteStore

    path = sys.argv[1]
    store = SQLiteStore(path, ttl_seconds=3600.0, reasoning_ttl_seconds=3600.0, max_response_bytes=1 << 22)
    store.put_reasoning("warm", "up")
    events = []
    # Another process (here: another connection) holds the write lock, as a busy worker would.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    def writer():
        store.put_reasoning("k", "written")  # waits for the lock: cooperatively
        events.append("write done")

    def reader():
        for n in range(20):
            assert store.get_reasoning("warm") == "up"
            gevent.sleep(0.005)
        events.append("reads done")
        holder.execute("COMMIT")  # only now may the writer go on

    gevent.joinall([gevent.spawn(writer), gevent.spawn(reader)], raise_error=True)
    print(events, store.get_reasoning("k"))
""")


def test_a_greenlet_waiting_for_the_lock_lets_the_others_run(tmp_path):
    """Under gevent, waiting for another process's write lock must not stall the worker: the reads of another
    greenlet finish first (they could not, were the wait a blocking sleep in C), then the write succeeds."""
    out = subprocess.run([sys.executable, "-c", GREENLETS, str(tmp_path / "store.db")], check=False,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['reads done', 'write done'] written"


def test_a_lock_held_past_the_timeout_is_unavailable_not_a_hang(tmp_path, monkeypatch):
    from deepseek_proxy.store import sqlite as store_sqlite

    monkeypatch.setattr(store_sqlite, "LOCK_TIMEOUT", 0.2)
    path = tmp_path / "store.db"
    store = SQLiteStore(path, **LIMITS)
    store.ping()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable, match="stayed locked"):
        store.put_response(record("resp_1"))
    assert store.get_response("resp_1") is None  # reads still work (WAL): and nothing half-written
    holder.execute("ROLLBACK")
    store.put_response(record("resp_1"))
    assert store.get_response("resp_1") is not None
    store.close()


def test_writes_sweep_lazily(tmp_path, monkeypatch):
    from deepseek_proxy.store import sqlite as store_sqlite

    now = [1_800_000_000.0]
    monkeypatch.setattr(store_sqlite, "now_seconds", lambda: now[0])
    path = tmp_path / "store.db"
    store = SQLiteStore(path, **LIMITS)
    store.put_response(record("resp_old"))
    now[0] += 2 * 86400
    store.put_response(record("resp_new"))  # more than SWEEP_INTERVAL later: this write sweeps
    with sqlite3.connect(path) as conn:
        assert [row[0] for row in conn.execute("SELECT id FROM responses")] == ["resp_new"]
        assert {row[0] for row in conn.execute("SELECT response_id FROM items")} == {"resp_new"}
    store.close()


def test_a_worker_starting_while_another_writes_can_read_at_once(tmp_path):
    path = tmp_path / "store.db"
    first = SQLiteStore(path, **LIMITS)
    first.put_response(record("resp_1"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another worker in the middle of a write
    late = SQLiteStore(path, **LIMITS)  # a worker (re)started now: opens its connection on this first read
    assert late.get_response("resp_1").id == "resp_1"
    holder.execute("COMMIT")
    late.put_response(record("resp_2"))
    assert first.get_response("resp_2") is not None
    first.close()
    late.close()


def test_checkpoints_run_off_the_worker_and_keep_the_wal_small(tmp_path, monkeypatch):
    """The store checkpoints in a thread of its own after each CHECKPOINT_BYTES written, long before SQLite's own
    (which would run inside a commit, blocking the gevent worker) would: with writes as a proxy makes them (one
    per finished response, not back to back) the WAL stays small and SQLite's backstop never has to run."""
    from deepseek_proxy.store import sqlite as store_sqlite

    monkeypatch.setattr(store_sqlite, "CHECKPOINT_BYTES", 256 * 1024)
    path = tmp_path / "store.db"
    store = SQLiteStore(path, **LIMITS)
    big = record("resp_big", text="x" * 50_000)
    for n in range(60):  # ~6 MB written in all
        big.id, big.expires_at = f"resp_{n % 3}", 0.0
        store.put_response(big)
        deadline = time.monotonic() + 10
        while store._checkpointing and time.monotonic() < deadline:  # the test waits; the worker never does
            time.sleep(0.005)
    assert store.checkpoints >= 10
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # a fresh connection's default
    assert store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == store_sqlite.BACKSTOP_PAGES
    assert Path(f"{path}-wal").stat().st_size < 1024 * 1024  # without the checkpoints: over 6 MB
    store.close()


CHECKPOINT_UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import sys, threading, gevent
    from deepseek_proxy.store import sqlite as store_sqlite
    from deepseek_proxy.store.sqlite import SQLiteStore

    store_sqlite.CHECKPOINT_BYTES = 1
    store = SQLiteStore(sys.argv[1], ttl_seconds=3600.0, reasoning_ttl_seconds=3600.0, max_response_bytes=1 << 22)
    threads = []
    original = store._checkpoint
    def spy():
        threads.append(threading.get_native_id())
        original()
    store._checkpoint = spy
    store.put_reasoning("k", "v")
    for _ in range(500):
        if store.checkpoints:
            break
        gevent.sleep(0.01)
    print(store.checkpoints, threads[0] != threading.get_native_id())
""")


def test_under_gevent_the_checkpoint_runs_in_an_os_thread(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHECKPOINT_UNDER_GEVENT, str(tmp_path / "store.db")], check=False,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"]


def test_a_second_store_on_the_file_keeps_the_first_ones_view_fresh(tmp_path):
    """SQLite's locks are per process: opening a second Store on the file must not drop the first one's (else the
    next process to close believes it is the last, deletes the -wal and -shm, and this one reads stale snapshots)."""
    path = tmp_path / "store.db"
    gateway, ops = SQLiteStore(path, **LIMITS), SQLiteStore(path, **LIMITS)  # as in a worker: two on one file
    gateway.put_reasoning("k", "v1")
    ops.ping()  # the second one opens its connection

    def elsewhere(text: str) -> None:  # the CLI: another process, which closes its connection when done
        subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from deepseek_proxy.store.sqlite import SQLiteStore
            s = SQLiteStore({str(path)!r}, ttl_seconds=86400.0, reasoning_ttl_seconds=3600.0,
                            max_response_bytes=4194304)
            s.put_reasoning("k", {text!r})
            s.close()""")], check=True)

    elsewhere("v2")
    gateway.put_reasoning("mine", "x")  # this process writes in between (a worker's touch)
    elsewhere("v3")
    assert gateway.get_reasoning("k") == "v3" and ops.get_reasoning("k") == "v3"
    assert gateway.get_reasoning("mine") == "x"
    gateway.close()
    ops.close()
