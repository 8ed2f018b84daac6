"""The default backend: one SQLite file in the user data dir (`sqlite:///…/deepseek-proxy/store.db`).

Nothing to install, survives restarts, shared by every gunicorn worker of one machine:
- WAL mode: readers never wait for a writer, and a writer never waits for readers; `synchronous = NORMAL`
  (durable at each WAL checkpoint, never corrupt; a power cut may lose the last commits, not the file).
- One connection per process, opened lazily on first use, so a store built before gunicorn forks is safe: a
  connection inherited across fork is never used (nor closed: that could release the parent's locks).
- sqlite3 calls do not yield to other greenlets: each call blocks the whole gevent worker for its duration. So
  every call is one short statement or one short transaction; records are encoded before the write transaction
  opens; and waiting for another process's write lock is done in Python with `time.sleep` (cooperative under
  gevent), after a short busy_timeout in C (the common case: another worker's sub-millisecond commit).
  `python -m bench.store` measures what a put and a get cost.
- WAL checkpoints (copying the log back into the file, with an fsync: ~4 ms per 4 MB) run in an OS thread, not
  inside a worker's commit (see CHECKPOINT_BYTES).
- Expired rows are invisible at once (every read filters on expires_at) and deleted by `sweep`, which a write
  runs once a minute per process (once a second while there is a backlog), a bounded batch at a time.
- The file (and its -wal / -shm, which SQLite creates with the same mode) is private to the user: 0600.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..jsonfast import dumps, loads
from .base import (
    Admitted,
    ClientKeyRecord,
    KeyNameTaken,
    Store,
    StoredResponse,
    StoreUnavailable,
    UsageRow,
    find_item,
    now_seconds,
    sliding_window,
    window_start,
)

T = TypeVar("T")

SCHEMA_VERSION = 2  # 2: issue 12's tables (every statement is IF NOT EXISTS, so a version 1 file upgrades)
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    meta BLOB NOT NULL,   -- JSON: response (with its output), model, created_at, previous_response_id, chain
    input BLOB NOT NULL   -- JSON array: this request's input items
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses(expires_at);
-- Which stored responses hold an item with a given id: kind 0 = output (issued here), 1 = input (echoed).
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY (item_id, response_id, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_response ON items(response_id);
CREATE TABLE IF NOT EXISTS reasoning (
    key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reasoning_expiry ON reasoning(expires_at);
-- Issue 12 (schema 2): client keys (their sha256, never the key), usage rows, rate-limit counters, slots, marks.
CREATE TABLE IF NOT EXISTS client_keys (
    name TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,           -- JSON: ClientKeyRecord.to_json()
    revoked INTEGER NOT NULL DEFAULT 0
);
-- What each key name has cost in all: kept per name, so it outlives a revoked key's record and old usage rows.
CREATE TABLE IF NOT EXISTS spent (
    key_name TEXT PRIMARY KEY,
    usd REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    at REAL NOT NULL,
    key_name TEXT NOT NULL,
    row TEXT NOT NULL               -- JSON: UsageRow.to_json()
);
CREATE INDEX IF NOT EXISTS usage_at ON usage(at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    window_start REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (name, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slots (
    name TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (
    scope TEXT NOT NULL,
    member TEXT NOT NULL,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (scope, member)
) WITHOUT ROWID;
"""

BUSY_TIMEOUT_MS = 20  # in C, blocking the worker: enough for another process's commit
LOCK_TIMEOUT = 10.0  # then cooperative retries, in all
# SQLite's own autocheckpoint (every 1000 pages, ~4 MB of WAL) runs inside the commit that crosses it: measured
# ~4 ms (copy + fsync) once every ~30 puts of a 100 KB turn, all that time blocking the gevent worker. So this
# process checkpoints in an OS thread (sqlite3 releases the GIL) after writing CHECKPOINT_BYTES. Such a checkpoint
# only lets the WAL restart from its beginning when no write came in while it ran (true of a proxy, whose writes
# are one per finished response; not of back-to-back writes), so SQLite's own stays on as the backstop, at 4x the
# pages, and the WAL file is truncated back to WAL_LIMIT_BYTES after a restart.
CHECKPOINT_BYTES = 4 * 1024 * 1024
BACKSTOP_PAGES = 4000  # x 4 KB pages: 16 MB
WAL_LIMIT_BYTES = 16 * 1024 * 1024

log = logging.getLogger(__name__)
SWEEP_INTERVAL = 60.0
SWEEP_BATCH = 200  # per transaction: a few ms at most of a worker's time

# Connections opened before a fork: kept referenced so the child never finalizes (closes) them.
_INHERITED: list[sqlite3.Connection] = []


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class SQLiteStore(Store):
    def __init__(self, path: str | Path, **limits: Any):
        super().__init__(**limits)
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.RLock()  # for thread-based callers; greenlets never yield while holding it
        self._next_sweep = 0.0
        self._written = 0  # bytes committed by this process since its last checkpoint
        self._checkpointing = False
        self.checkpoints = 0  # done by this process (tests and the bench read it)

    # ---- connection -------------------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
            self._written, self._checkpointing = 0, False  # a checkpoint thread does not survive a fork
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _create_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"the store file {self.path} cannot be opened: {exc}") from None
        try:
            self._setup(conn)  # a busy error goes up to _retrying, which waits (lock released) and reopens
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # journal_mode is a property of the file: the first process sets it, the others find it set.
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")  # see CHECKPOINT_BYTES
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(f"the store file {self.path} was written by a newer deepseek-proxy "
                                   f"(schema {version}, this one knows {SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA.split(";"):  # not executescript: it would COMMIT on its own
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _retrying(self, work: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run `work` (in one IMMEDIATE transaction when `write`), waiting cooperatively while another process
        holds the lock. sqlite3 errors become StoreUnavailable. Never sleeps holding self._lock: a lock made before
        gevent's patching is a real one, and a greenlet blocked on it would stall the worker."""
        deadline = time.monotonic() + LOCK_TIMEOUT
        delay = 0.001
        while True:
            with self._lock:
                try:
                    current = self._connection()
                    if not write:
                        return work(current)
                    current.execute("BEGIN IMMEDIATE")
                    try:
                        result = work(current)
                        current.execute("COMMIT")
                        return result
                    except BaseException:
                        if current.in_transaction:
                            current.execute("ROLLBACK")
                        raise
                except sqlite3.Error as exc:
                    if not _is_busy(exc):
                        raise StoreUnavailable(f"the store file {self.path}: {exc}") from None
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"the store file {self.path} stayed locked for {LOCK_TIMEOUT:g} s")
            time.sleep(delay)  # gevent-patched in the server: other greenlets run meanwhile
            delay = min(delay * 2, 0.05)

    def ping(self) -> None:
        self._retrying(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ---- responses --------------------------------------------------------------------------------------------
    def put_response(self, record: StoredResponse) -> None:
        now = now_seconds()
        input_blob, size = self._prepare_put(record, now)  # before the transaction
        held = [(0, item) for item in record.output_items] + [(1, item) for item in record.input_items or []]
        item_rows = [(item["id"], record.id, kind) for kind, item in held if isinstance(item.get("id"), str)]

        def write(conn: sqlite3.Connection) -> None:
            record.chain = []
            if record.previous_response_id:
                row = conn.execute("SELECT meta FROM responses WHERE id = ? AND expires_at > ?",
                                   (record.previous_response_id, now)).fetchone()
                record.follow(row[0] if row else None)
            meta = record.encode_meta(with_expiry=False)  # the expiry has its own column
            conn.execute("DELETE FROM items WHERE response_id = ?", (record.id,))
            conn.execute("INSERT OR REPLACE INTO responses (id, expires_at, meta, input) VALUES (?, ?, ?, ?)",
                         (record.id, record.expires_at, meta, input_blob))
            conn.executemany("INSERT OR IGNORE INTO items (item_id, response_id, kind) VALUES (?, ?, ?)", item_rows)
            if now >= self._next_sweep:
                gone, stale = self._sweep(conn, now)
                # A full batch means a backlog (e.g. after a long stop): come back soon rather than in a minute.
                backlog = gone == SWEEP_BATCH or stale == SWEEP_BATCH
                self._next_sweep = now + (1.0 if backlog else SWEEP_INTERVAL)

        self._retrying(write, write=True)
        self._wrote(size)

    def _row(self, response_id: str, with_input: bool) -> StoredResponse | None:
        columns = "meta, expires_at, input" if with_input else "meta, expires_at"
        row = self._retrying(lambda conn: conn.execute(
            f"SELECT {columns} FROM responses WHERE id = ? AND expires_at > ?",
            (response_id, now_seconds())).fetchone())
        if row is None:
            return None
        return StoredResponse.decode(response_id, row[0], expires_at=row[1], input_blob=row[2] if with_input else None)

    def get_response(self, response_id: str, *, with_input: bool = False) -> StoredResponse | None:
        return self._row(response_id, with_input)

    def delete_response(self, response_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            live = conn.execute("SELECT 1 FROM responses WHERE id = ? AND expires_at > ?",
                                (response_id, now_seconds())).fetchone()
            conn.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            conn.execute("DELETE FROM items WHERE response_id = ?", (response_id,))
            return live is not None

        return self._retrying(delete, write=True)

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        # Output first (kind 0): the item as issued; then the longest-lived holder.
        rows = self._retrying(lambda conn: conn.execute(
            "SELECT r.id, i.kind, CASE i.kind WHEN 0 THEN r.meta ELSE r.input END FROM items i "
            "JOIN responses r ON r.id = i.response_id WHERE i.item_id = ? AND r.expires_at > ? "
            "ORDER BY i.kind, r.expires_at DESC LIMIT 4", (item_id, now_seconds())).fetchall())
        for _, kind, blob in rows:
            items = loads(blob)["response"].get("output") or [] if kind == 0 else loads(blob)
            found = find_item(items, item_id)
            if found is not None:
                return found
        return None

    def get_conversation(self, response_id: str) -> list[StoredResponse] | None:
        last = self._row(response_id, True)
        if last is None:
            return None
        if not last.chain:
            return [last]
        marks = ",".join("?" * len(last.chain))
        rows = self._retrying(lambda conn: conn.execute(
            f"SELECT id, meta, expires_at, input FROM responses WHERE id IN ({marks}) AND expires_at > ?",
            (*last.chain, now_seconds())).fetchall())
        by_id = {row[0]: StoredResponse.decode(row[0], row[1], expires_at=row[2], input_blob=row[3]) for row in rows}
        if len(by_id) != len(set(last.chain)):
            return None
        return [*(by_id[earlier] for earlier in last.chain), last]

    # ---- reasoning cache ---------------------------------------------------------------------------------------
    def put_reasoning(self, key: str, text: str) -> None:
        expires_at = now_seconds() + self.reasoning_ttl_seconds
        self._retrying(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO reasoning (key, expires_at, text) VALUES (?, ?, ?)", (key, expires_at, text)),
            write=True)
        self._wrote(len(text) + 100)

    # ---- checkpoints, off the worker ---------------------------------------------------------------------------
    def _wrote(self, size: int) -> None:
        self._written += size
        if self._written >= CHECKPOINT_BYTES and not self._checkpointing:
            self._written, self._checkpointing = 0, True
            _in_an_os_thread(self._checkpoint)

    def _checkpoint(self) -> None:
        """PASSIVE: copies what no reader still needs, never waits for one; the WAL then restarts from its
        beginning at a later write. Its own connection, so the worker's stays free meanwhile."""
        try:
            conn = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                conn.close()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # the next one will try again
            log.warning("store checkpoint of %s failed: %s", self.path, exc)
        finally:
            self._checkpointing = False

    def get_reasoning(self, key: str) -> str | None:
        row = self._retrying(lambda conn: conn.execute(
            "SELECT text FROM reasoning WHERE key = ? AND expires_at > ?", (key, now_seconds())).fetchone())
        return row[0] if row else None

    # ---- upkeep ------------------------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        moment = now_seconds() if now is None else now
        total = 0
        while True:  # in bounded batches, each its own short transaction
            gone, stale = self._retrying(lambda conn: self._sweep(conn, moment), write=True)
            total += gone + stale
            if gone < SWEEP_BATCH and stale < SWEEP_BATCH:
                return total

    @staticmethod
    def _sweep(conn: sqlite3.Connection, now: float) -> tuple[int, int]:
        ids = [row[0] for row in conn.execute(
            "SELECT id FROM responses WHERE expires_at <= ? LIMIT ?", (now, SWEEP_BATCH))]
        if ids:
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM items WHERE response_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM responses WHERE id IN ({marks})", ids)
        stale = conn.execute("DELETE FROM reasoning WHERE key IN (SELECT key FROM reasoning WHERE expires_at <= ? "
                             "LIMIT ?)", (now, SWEEP_BATCH)).rowcount
        return len(ids), stale

    # ---- client keys -------------------------------------------------------------------------------------------
    def put_client_key(self, record: ClientKeyRecord) -> None:
        blob = record.encode()

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT revoked FROM client_keys WHERE name = ?", (record.name,)).fetchone()
            if row is not None and not row[0]:
                raise KeyNameTaken(record.name)
            conn.execute("INSERT OR REPLACE INTO client_keys (name, key_hash, record, revoked) VALUES (?, ?, ?, ?)",
                         (record.name, record.key_hash, blob, int(record.revoked_at is not None)))

        self._retrying(write, write=True)

    def _keys_where(self, clause: str, args: tuple) -> list[ClientKeyRecord]:
        rows = self._retrying(lambda conn: conn.execute(
            f"SELECT k.record, COALESCE(s.usd, 0) FROM client_keys k LEFT JOIN spent s ON s.key_name = k.name "
            f"{clause}", args).fetchall())
        return [ClientKeyRecord.decode(row[0], row[1]) for row in rows]

    def find_client_key(self, key_hash: str) -> ClientKeyRecord | None:
        found = self._keys_where("WHERE k.key_hash = ?", (key_hash,))
        return found[0] if found else None

    def get_client_key(self, name: str) -> ClientKeyRecord | None:
        found = self._keys_where("WHERE k.name = ?", (name,))
        return found[0] if found else None

    def list_client_keys(self) -> list[ClientKeyRecord]:
        return self._keys_where("ORDER BY k.name", ())

    def _update_key(self, name: str, change: Callable[[dict[str, Any]], bool]) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT record FROM client_keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False
            data = loads(row[0])
            if not change(data):
                return False
            conn.execute("UPDATE client_keys SET record = ?, revoked = ? WHERE name = ?",
                         (dumps(data), int(data.get("revoked_at") is not None), name))
            return True

        return self._retrying(write, write=True)

    # ---- usage -------------------------------------------------------------------------------------------------
    def add_usage(self, row: UsageRow) -> None:
        blob = row.encode()
        horizon = now_seconds() - self.usage_retention_seconds

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO usage (at, key_name, row) VALUES (?, ?, ?)", (row.at, row.key_name, blob))
            if row.cost_usd:
                conn.execute("INSERT INTO spent (key_name, usd) VALUES (?, ?) ON CONFLICT(key_name) DO UPDATE SET "
                             "usd = usd + excluded.usd", (row.key_name, row.cost_usd))
            # Retention, a bounded batch per write (the index on `at` makes it cheap).
            conn.execute("DELETE FROM usage WHERE rowid IN (SELECT rowid FROM usage WHERE at < ? LIMIT 50)",
                         (horizon,))

        self._retrying(write, write=True)
        self._wrote(len(blob) + 100)

    def usage_rows(self, since: float | None = None, until: float | None = None) -> list[UsageRow]:
        low, high = self._usage_window(since, until, now_seconds())
        rows = self._retrying(lambda conn: conn.execute(
            "SELECT row FROM usage WHERE at >= ? AND at < ? ORDER BY at", (low, high)).fetchall())
        return [UsageRow.decode(row[0]) for row in rows]

    def spent_usd(self, key_name: str) -> float:
        row = self._retrying(lambda conn: conn.execute("SELECT usd FROM spent WHERE key_name = ?",
                                                       (key_name,)).fetchone())
        return float(row[0]) if row else 0.0

    # ---- limits ------------------------------------------------------------------------------------------------
    def admit(self, rates: list[tuple[str, float, int]], slots: list[tuple[str, int, float]]) -> Admitted:
        """One IMMEDIATE transaction: every decision read first, then written only when all are granted."""
        import uuid

        now = now_seconds()
        tokens = [uuid.uuid4().hex for _ in slots]

        def work(conn: sqlite3.Connection) -> Admitted:
            for index, (name, limit, _) in enumerate(slots):
                conn.execute("DELETE FROM slots WHERE name = ? AND expires_at <= ?", (name, now))
                if conn.execute("SELECT COUNT(*) FROM slots WHERE name = ?", (name,)).fetchone()[0] >= limit:
                    return Admitted(False, refused_slot=index)
            counted = []
            for index, (counter, window, limit) in enumerate(rates):
                start = window_start(now, window)
                counts = dict(conn.execute("SELECT window_start, count FROM counters WHERE name = ? AND "
                                           "window_start IN (?, ?)", (counter, start - window, start)).fetchall())
                current = counts.get(start, 0)
                allowed, wait = sliding_window(counts.get(start - window, 0), current, now - start, window, limit)
                if not allowed:
                    return Admitted(False, refused_rate=index, wait=wait)
                counted.append((counter, start, current + 1, window))
            for counter, start, count, window in counted:
                conn.execute("INSERT OR REPLACE INTO counters (name, window_start, count) VALUES (?, ?, ?)",
                             (counter, start, count))
                if count == 1:
                    conn.execute("DELETE FROM counters WHERE name = ? AND window_start < ?", (counter, start - window))
            conn.executemany("INSERT INTO slots (name, token, expires_at) VALUES (?, ?, ?)",
                             [(name, token, now + ttl) for (name, _, ttl), token in zip(slots, tokens, strict=True)])
            return Admitted(True, tokens=tokens)

        result = self._retrying(work, write=True)
        self._wrote(200)
        return result

    def refresh_slot(self, name: str, token: str, ttl_seconds: float) -> None:
        until = now_seconds() + ttl_seconds
        self._retrying(lambda conn: conn.execute("UPDATE slots SET expires_at = ? WHERE name = ? AND token = ?",
                                                 (until, name, token)), write=True)

    def release_slot(self, name: str, token: str) -> None:
        self._retrying(lambda conn: conn.execute("DELETE FROM slots WHERE name = ? AND token = ?", (name, token)),
                       write=True)
        self._wrote(100)

    def slots_in_use(self, name: str) -> int:
        return self._retrying(lambda conn: conn.execute(
            "SELECT COUNT(*) FROM slots WHERE name = ? AND expires_at > ?", (name, now_seconds())).fetchone()[0])

    # ---- marks -------------------------------------------------------------------------------------------------
    def put_mark(self, scope: str, member: str, until: float, reason: str) -> None:
        self._retrying(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO marks (scope, member, until, reason) VALUES (?, ?, ?, ?)",
            (scope, member, until, reason)), write=True)

    def get_marks(self, scope: str) -> dict[str, tuple[float, str]]:
        rows = self._retrying(lambda conn: conn.execute(
            "SELECT member, until, reason FROM marks WHERE scope = ? AND until > ?", (scope, now_seconds())).fetchall())
        return {member: (until, reason) for member, until, reason in rows}

    def clear_mark(self, scope: str, member: str) -> None:
        self._retrying(lambda conn: conn.execute("DELETE FROM marks WHERE scope = ? AND member = ?", (scope, member)),
                       write=True)


def _create_private(path: Path) -> None:
    """Create the store file 0600 if it does not exist yet, and never open (or close) an existing one.

    SQLite's locks are POSIX (fcntl) locks, which belong to the process: closing ANY descriptor of the file drops
    every lock this process holds on it, including those of its open connections (another Store object on the same
    file: Gateway.store and Ops.store in a worker). With its SHARED lock gone, another process closing its own
    connection believes it is the file's last user: it checkpoints and deletes the -wal and -shm, and this process
    goes on reading (and writing) an orphaned WAL through its mapped, unlinked -shm. Every connection of the process
    shares that mapping (SQLite keeps one per inode), so a fresh one reads the same stale snapshot: a revoked key
    stayed accepted for seconds. O_EXCL: only a file that no connection can have open yet is ever closed here."""
    if path.exists():
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:  # another process (or Store) made it meanwhile
        pass


def _in_an_os_thread(work: Callable[[], None]) -> None:
    """Run `work` in a real thread: gevent's thread pool when the worker is monkey-patched (threading.Thread is a
    greenlet then), else a plain daemon thread."""
    try:
        from gevent import monkey
        patched = monkey.is_module_patched("threading")
    except ImportError:  # pragma: no cover - gevent is a dependency
        patched = False
    if patched:
        import gevent
        gevent.get_hub().threadpool.spawn(work)
    else:
        threading.Thread(target=work, name="store-checkpoint", daemon=True).start()

