#!/usr/bin/env python3
"""A Syncline channel in Python: one source, `Task`, stored in SQLite.

Syncline calls this service (syncline.v1.Channel, proto/syncline/v1/channel.proto) to
read, watch and write a backend's data. This example serves:

- `Task`, partitioned by user: the partition key is the user id. Fields: title (string,
  required), notes (string), done (bool), priority (int), estimate (double), attachment
  (bytes). Any non-required field may be an explicit null. Values keep their type: they
  are stored in SQLite as native values with their kind beside them and come back as the
  same `Value` kind.
- ids `task-<n>` generated on create; a per-record version (1 on create, +1 per update)
  used for conflict detection: an Update or Delete whose base_version is neither 0 nor the
  record's current version gets `WriteResponse.conflict` with the current record.
- a durable change feed (table `changes`, autoincrement id) appended in the same
  transaction as every write. Watch's resume token is the 8-byte big-endian id of the last
  change a batch covers; Watch replays the changes after the token, then follows new ones.
- users for Authenticate (`demo`/`demo` seeded; the user id is the username).
- on the same port, the mobile RPC service `tasks` (syncline.v1.MobileService,
  proto/syncline/v1/rpc.proto) with one method, `AddTasks`: payload
  `{"titles": ["buy milk", ...]}` (1 to 100 non-empty titles) creates those tasks for the
  calling user in one transaction and answers `{"created": ["task-7", ...]}`. The new tasks
  reach devices through the change feed like any other write.

Run:  python channel.py --db tasks.db --listen 127.0.0.1:7802
It prints `listening on HOST:PORT` once ready (port 0 picks a free port and prints it) and
stops on SIGTERM or SIGINT.

Generate the stubs first (./generate.sh): they go to gen/, which is put on sys.path here.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import signal
import sqlite3
import struct
import sys
import threading
from concurrent import futures
from typing import Iterable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

from syncline.v1 import channel_pb2, channel_pb2_grpc, common_pb2, rpc_pb2, rpc_pb2_grpc  # noqa: E402

SOURCE = "Task"
# The mobile RPC service name this backend answers to, and its one method.
RPC_SERVICE = "tasks"
RPC_ADD_TASKS = "AddTasks"
MAX_TITLES_PER_CALL = 100

# name -> (type, required). Types are the ones FieldSchema names.
TASK_FIELDS: dict[str, tuple[str, bool]] = {
    "title": ("string", True),
    "notes": ("string", False),
    "done": ("bool", False),
    "priority": ("int", False),
    "estimate": ("double", False),
    "attachment": ("bytes", False),
}

# Value oneof case -> FieldSchema type name.
KIND_TO_TYPE = {
    "string_value": "string",
    "int_value": "int",
    "double_value": "double",
    "bool_value": "bool",
    "bytes_value": "bytes",
    "null_value": "null",
}

MAX_ID_BYTES = 512
WATCH_POLL_SECONDS = 0.02
# At most this many changes are read from the feed per poll; a stream that is behind
# catches up over several polls instead of loading the whole feed at once.
WATCH_PAGE = 256
SEARCH_DEFAULT_LIMIT = 50
SEARCH_MAX_LIMIT = 500
PBKDF2_ITERATIONS = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username   TEXT PRIMARY KEY,
    salt       BLOB NOT NULL,
    pw_hash    BLOB NOT NULL,
    user_id    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    n          INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT UNIQUE,
    user_key   TEXT NOT NULL,
    version    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_user ON tasks (user_key, n);
-- One row per field. kind is the Value kind; value holds it natively: TEXT for string,
-- INTEGER for int and bool (0/1), REAL for double (NaN, which SQLite cannot store as REAL,
-- as its 8-byte big-endian bit pattern in a BLOB), BLOB for bytes, NULL for null.
CREATE TABLE IF NOT EXISTS task_fields (
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    value,
    PRIMARY KEY (task_id, name)
);
-- Creates already applied, by the device mutation id: a retried Create returns the task it
-- created the first time instead of creating another.
CREATE TABLE IF NOT EXISTS create_mutations (
    mutation_id TEXT PRIMARY KEY,
    task_id     TEXT NOT NULL
);
-- Every Create, Update and Delete call received, in order, whatever its outcome: how often
-- each device mutation id reached this backend (Syncline sends each at most once unless it
-- crashed mid-call; the create_mutations dedupe covers that case).
CREATE TABLE IF NOT EXISTS write_calls (
    n           INTEGER PRIMARY KEY AUTOINCREMENT,
    op          TEXT NOT NULL,
    mutation_id TEXT NOT NULL
);
-- The change feed Watch streams. record is the serialized Record after an upsert (a
-- snapshot, so replays show each change as it was), NULL for a delete.
CREATE TABLE IF NOT EXISTS changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    source     TEXT NOT NULL,
    part_key   TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    op         TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    record     BLOB
);
"""


class ChannelError(Exception):
    """A request the channel refuses, with the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ChannelError:
    return ChannelError(grpc.StatusCode.INVALID_ARGUMENT, message)


# ---------------------------------------------------------------------------------------
# Values <-> SQLite


def value_to_sql(v: common_pb2.Value) -> tuple[str, object]:
    kind = v.WhichOneof("kind")
    if kind is None:
        raise invalid("a field value has no kind set")
    if kind == "double_value":
        d = v.double_value
        if math.isnan(d):
            return "double", struct.pack(">d", d)
        return "double", d
    if kind == "bool_value":
        return "bool", 1 if v.bool_value else 0
    if kind == "null_value":
        return "null", None
    return KIND_TO_TYPE[kind], getattr(v, kind)


def value_from_sql(kind: str, value: object) -> common_pb2.Value:
    if kind == "string":
        return common_pb2.Value(string_value=value)
    if kind == "int":
        return common_pb2.Value(int_value=value)
    if kind == "double":
        if isinstance(value, bytes):
            return common_pb2.Value(double_value=struct.unpack(">d", value)[0])
        return common_pb2.Value(double_value=float(value))
    if kind == "bool":
        return common_pb2.Value(bool_value=bool(value))
    if kind == "bytes":
        return common_pb2.Value(bytes_value=bytes(value))
    if kind == "null":
        return common_pb2.Value(null_value=common_pb2.NULL_VALUE)
    raise RuntimeError(f"unknown stored kind {kind!r}")


def validate_fields(fields, creating: bool) -> None:
    """Checks field names and value kinds against the Task schema."""
    for name, v in fields.items():
        if not name:
            raise invalid("field names must be non-empty")
        if name not in TASK_FIELDS:
            raise invalid(f"unknown field {name!r} of {SOURCE}")
        kind = v.WhichOneof("kind")
        if kind is None:
            raise invalid(f"field {name!r} has no value kind set")
        want, required = TASK_FIELDS[name]
        got = KIND_TO_TYPE[kind]
        if got == "null":
            if required:
                raise invalid(f"field {name!r} is required and cannot be null")
            continue
        if got != want:
            raise invalid(f"field {name!r} must be {want}, got {got}")
    if creating:
        for name, (_, required) in TASK_FIELDS.items():
            if required and name not in fields:
                raise invalid(f"field {name!r} is required")


# ---------------------------------------------------------------------------------------
# Storage


def token_of(change_id: int) -> bytes:
    return struct.pack(">Q", change_id)


def parse_token(token: bytes) -> int:
    if len(token) != 8:
        raise invalid("resume_token must be 8 bytes (as returned in a ChangeBatch)")
    return struct.unpack(">Q", token)[0]


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)


class Store:
    """The SQLite database. One connection, serialized by a lock: every write is one
    transaction that also appends its change to the feed."""

    def __init__(self, path: str):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
        with self._lock:
            self._db.executescript(SCHEMA)
            if self._db.execute("SELECT 1 FROM users WHERE username = 'demo'").fetchone() is None:
                self._add_user("demo", "demo")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _add_user(self, username: str, password: str) -> None:
        salt = os.urandom(16)
        self._db.execute(
            "INSERT INTO users (username, salt, pw_hash, user_id) VALUES (?, ?, ?, ?)",
            (username, salt, hash_password(password, salt), username),
        )

    # -- reads (call with the lock held) --

    def _record(self, task_id: str) -> common_pb2.Record | None:
        row = self._db.execute("SELECT version FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        rec = common_pb2.Record(id=task_id, version=row[0])
        for name, kind, value in self._db.execute(
            "SELECT name, kind, value FROM task_fields WHERE task_id = ?", (task_id,)
        ):
            rec.fields[name].CopyFrom(value_from_sql(kind, value))
        return rec

    def _owned(self, task_id: str, user_key: str) -> common_pb2.Record | None:
        row = self._db.execute(
            "SELECT 1 FROM tasks WHERE id = ? AND user_key = ?", (task_id, user_key)
        ).fetchone()
        return None if row is None else self._record(task_id)

    def _append_change(self, user_key: str, rec: common_pb2.Record, op: str) -> None:
        self._db.execute(
            "INSERT INTO changes (source, part_key, record_id, op, record) VALUES (?, ?, ?, ?, ?)",
            (SOURCE, user_key, rec.id, op, rec.SerializeToString() if op == "upsert" else None),
        )

    def _put_fields(self, task_id: str, fields) -> None:
        for name, v in fields.items():
            kind, value = value_to_sql(v)
            self._db.execute(
                "INSERT INTO task_fields (task_id, name, kind, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (task_id, name) DO UPDATE SET kind = excluded.kind, "
                "value = excluded.value",
                (task_id, name, kind, value),
            )

    # -- operations --

    def authenticate(self, username: str, password: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT salt, pw_hash, user_id FROM users WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            return None
        salt, pw_hash, user_id = row
        return user_id if hmac.compare_digest(hash_password(password, salt), pw_hash) else None

    def query(self, user_key: str) -> list[common_pb2.Record]:
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM tasks WHERE user_key = ? ORDER BY n", (user_key,)
                )
            ]
            return [self._record(i) for i in ids]

    def create(self, user_key: str, fields, mutation_id: str) -> common_pb2.Record:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if mutation_id:
                    row = self._db.execute(
                        "SELECT task_id FROM create_mutations WHERE mutation_id = ?",
                        (mutation_id,),
                    ).fetchone()
                    if row is not None:
                        rec = self._owned(row[0], user_key)
                        self._db.execute("COMMIT")
                        if rec is None:
                            raise ChannelError(
                                grpc.StatusCode.FAILED_PRECONDITION,
                                f"mutation {mutation_id!r} already created a task that is "
                                "gone or in another partition",
                            )
                        return rec
                rec = self._insert(user_key, fields)
                if mutation_id:
                    self._db.execute(
                        "INSERT INTO create_mutations (mutation_id, task_id) VALUES (?, ?)",
                        (mutation_id, rec.id),
                    )
                self._db.execute("COMMIT")
                return rec
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _insert(self, user_key: str, fields) -> common_pb2.Record:
        """Inserts a task with a generated id and logs it (call in a transaction)."""
        cur = self._db.execute("INSERT INTO tasks (user_key, version) VALUES (?, 1)", (user_key,))
        task_id = f"task-{cur.lastrowid}"
        self._db.execute("UPDATE tasks SET id = ? WHERE n = ?", (task_id, cur.lastrowid))
        self._put_fields(task_id, fields)
        rec = self._record(task_id)
        self._append_change(user_key, rec, "upsert")
        return rec

    def add_tasks(self, user_key: str, titles: list[str]) -> list[str]:
        """Creates one open task per title in one transaction; returns their ids."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                created = [
                    self._insert(
                        user_key,
                        {
                            "title": common_pb2.Value(string_value=title),
                            "done": common_pb2.Value(bool_value=False),
                        },
                    ).id
                    for title in titles
                ]
                self._db.execute("COMMIT")
                return created
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def update(
        self, user_key: str, task_id: str, fields, base_version: int
    ) -> tuple[common_pb2.Record, bool]:
        """Returns (record, conflicted): the updated record, or the current one on conflict."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._owned(task_id, user_key)
                if current is None:
                    raise ChannelError(grpc.StatusCode.NOT_FOUND, f"no task {task_id!r}")
                if base_version != 0 and base_version != current.version:
                    self._db.execute("COMMIT")
                    return current, True
                self._put_fields(task_id, fields)
                self._db.execute("UPDATE tasks SET version = version + 1 WHERE id = ?", (task_id,))
                rec = self._record(task_id)
                self._append_change(user_key, rec, "upsert")
                self._db.execute("COMMIT")
                return rec, False
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def delete(
        self, user_key: str, task_id: str, base_version: int
    ) -> tuple[common_pb2.Record, bool]:
        """Returns (record, conflicted): the record as it was when deleted, or the current
        one on conflict (then nothing is deleted)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._owned(task_id, user_key)
                if current is None:
                    raise ChannelError(grpc.StatusCode.NOT_FOUND, f"no task {task_id!r}")
                if base_version != 0 and base_version != current.version:
                    self._db.execute("COMMIT")
                    return current, True
                self._db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
                self._append_change(user_key, current, "delete")
                self._db.execute("COMMIT")
                return current, False
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def search(
        self, user_key: str, needle: str, offset: int, limit: int
    ) -> tuple[list[common_pb2.Record], int]:
        """Tasks of the user whose title contains needle (case-insensitive for ASCII)."""
        where = (
            "FROM tasks t JOIN task_fields f ON f.task_id = t.id AND f.name = 'title' "
            "AND f.kind = 'string' WHERE t.user_key = ? AND instr(lower(f.value), lower(?)) > 0"
        )
        with self._lock:
            total = self._db.execute(f"SELECT count(*) {where}", (user_key, needle)).fetchone()[0]
            ids = [
                r[0]
                for r in self._db.execute(
                    f"SELECT t.id {where} ORDER BY t.n LIMIT ? OFFSET ?",
                    (user_key, needle, limit, offset),
                )
            ]
            return [self._record(i) for i in ids], total

    def record_write_call(self, op: str, mutation_id: str) -> None:
        """Counts a Create, Update or Delete call (see the write_calls table)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO write_calls (op, mutation_id) VALUES (?, ?)", (op, mutation_id)
            )

    def head(self) -> int:
        """The id of the last change in the feed (0 if none)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
            found = row.fetchone()
            return found[0] if found else 0

    def changes_after(self, after: int, limit: int) -> list[tuple]:
        with self._lock:
            return self._db.execute(
                "SELECT id, source, part_key, record_id, op, record FROM changes "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()


# ---------------------------------------------------------------------------------------
# The service


def check_partition(partition: common_pb2.PartitionKey) -> str:
    if partition.source != SOURCE:
        raise invalid(f"unknown source {partition.source!r}: this channel serves {SOURCE!r}")
    if not partition.key:
        raise invalid("partition key (the user id) must be non-empty")
    return partition.key


def check_caller(caller: channel_pb2.Caller, user_key: str) -> None:
    # Syncline authorizes devices itself; this is a second check that a write for a user's
    # partition comes from that user.
    if caller.user_id and caller.user_id != user_key:
        raise ChannelError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"user {caller.user_id!r} cannot write partition {user_key!r}",
        )


def check_id(record_id: str) -> str:
    if not record_id:
        raise invalid("record id must be non-empty")
    if len(record_id.encode()) > MAX_ID_BYTES:
        raise invalid(f"record id must be at most {MAX_ID_BYTES} bytes")
    return record_id


def rpc(method):
    """Turns ChannelError into the gRPC status it names (for unary methods)."""

    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ChannelError as e:
            context.abort(e.code, e.message)

    wrapper.__name__ = method.__name__
    return wrapper


def rpc_stream(method):
    """Same as rpc, for server-streaming methods."""

    def wrapper(self, request, context):
        try:
            yield from method(self, request, context)
        except ChannelError as e:
            context.abort(e.code, e.message)

    wrapper.__name__ = method.__name__
    return wrapper


class TaskChannel(channel_pb2_grpc.ChannelServicer):
    def __init__(self, store: Store, stopping: threading.Event):
        self.store = store
        self.stopping = stopping

    @rpc
    def Describe(self, request, context):
        return channel_pb2.DescribeResponse(
            sources=[
                channel_pb2.SourceDescription(
                    name=SOURCE,
                    partitioning="user",
                    capabilities=["create", "update", "delete", "search", "watch"],
                    fields=[
                        channel_pb2.FieldSchema(name=n, type=t, required=r)
                        for n, (t, r) in TASK_FIELDS.items()
                    ],
                )
            ]
        )

    @rpc
    def Authenticate(self, request, context):
        user_id = self.store.authenticate(request.username, request.password)
        if user_id is None:
            return channel_pb2.AuthenticateResponse(
                ok=False, message="invalid username or password"
            )
        return channel_pb2.AuthenticateResponse(ok=True, user_id=user_id)

    @rpc_stream
    def Query(self, request, context) -> Iterator[common_pb2.Record]:
        user_key = check_partition(request.partition)
        for rec in self.store.query(user_key):
            if not context.is_active():
                return
            yield rec

    @rpc
    def Create(self, request, context):
        self.store.record_write_call("create", request.mutation_id)
        user_key = check_partition(request.partition)
        check_caller(request.caller, user_key)
        validate_fields(request.record.fields, creating=True)
        rec = self.store.create(user_key, request.record.fields, request.mutation_id)
        return channel_pb2.WriteResponse(record=rec)

    @rpc
    def Update(self, request, context):
        self.store.record_write_call("update", request.mutation_id)
        user_key = check_partition(request.partition)
        check_caller(request.caller, user_key)
        task_id = check_id(request.record.id)
        validate_fields(request.record.fields, creating=False)
        rec, conflicted = self.store.update(
            user_key, task_id, request.record.fields, request.base_version
        )
        if conflicted:
            return channel_pb2.WriteResponse(conflict=rec)
        return channel_pb2.WriteResponse(record=rec)

    @rpc
    def Delete(self, request, context):
        self.store.record_write_call("delete", request.mutation_id)
        user_key = check_partition(request.partition)
        check_caller(request.caller, user_key)
        task_id = check_id(request.record.id)
        rec, conflicted = self.store.delete(user_key, task_id, request.base_version)
        if conflicted:
            return channel_pb2.WriteResponse(conflict=rec)
        return channel_pb2.WriteResponse(record=rec)

    @rpc
    def Search(self, request, context):
        if request.source != SOURCE:
            raise invalid(f"unknown source {request.source!r}: this channel serves {SOURCE!r}")
        user_key = request.caller.user_id
        if not user_key:
            raise invalid("caller.user_id is required: search covers the caller's tasks")
        needle = ""
        for name, v in request.params.items():
            if name != "title":
                raise invalid(f"unknown search parameter {name!r} (supported: 'title')")
            if v.WhichOneof("kind") != "string_value":
                raise invalid("search parameter 'title' must be a string")
            needle = v.string_value
        limit = request.limit or SEARCH_DEFAULT_LIMIT
        if limit > SEARCH_MAX_LIMIT:
            raise invalid(f"limit must be at most {SEARCH_MAX_LIMIT}")
        records, total = self.store.search(user_key, needle, request.offset, limit)
        return channel_pb2.SearchResponse(
            records=records,
            total=total,
            partition=common_pb2.PartitionKey(source=SOURCE, key=user_key),
        )

    @rpc_stream
    def Watch(self, request, context) -> Iterable[channel_pb2.ChangeBatch]:
        for s in request.sources:
            if s != SOURCE:
                raise invalid(f"unknown source {s!r}: this channel serves {SOURCE!r}")
        if request.resume_token:
            after = parse_token(request.resume_token)
            if after > self.store.head():
                raise ChannelError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "resume_token is ahead of the change feed (a different or reset database)",
                )
        else:
            # Empty token: start from now. The first batch carries no changes, only the
            # current position, so the caller holds a token from the start (and knows the
            # stream is live before it writes).
            after = self.store.head()
            yield channel_pb2.ChangeBatch(resume_token=token_of(after))

        # Wakes the wait below as soon as the RPC ends (cancelled, deadline, shutdown).
        done = threading.Event()
        context.add_callback(done.set)
        while context.is_active() and not self.stopping.is_set():
            rows = self.store.changes_after(after, WATCH_PAGE)
            for change_id, source, part_key, record_id, op, record in rows:
                after = change_id
                # One change is one committed write: one batch each.
                pc = channel_pb2.PartitionChanges(
                    partition=common_pb2.PartitionKey(source=source, key=part_key)
                )
                if op == "upsert":
                    pc.upserts.append(common_pb2.Record.FromString(record))
                else:
                    pc.deletes.append(record_id)
                yield channel_pb2.ChangeBatch(partitions=[pc], resume_token=token_of(after))
            if len(rows) < WATCH_PAGE:
                done.wait(WATCH_POLL_SECONDS)


class TaskService(rpc_pb2_grpc.MobileServiceServicer):
    """The mobile RPC service `tasks`: business operations devices call through Syncline,
    which passes the authenticated caller along."""

    def __init__(self, store: Store):
        self.store = store

    @rpc
    def Invoke(self, request, context):
        if request.service != RPC_SERVICE or request.method != RPC_ADD_TASKS:
            raise ChannelError(
                grpc.StatusCode.NOT_FOUND,
                f"service {request.service!r} has no method {request.method!r}",
            )
        user_key = request.caller.user_id
        if not user_key:
            raise invalid("AddTasks needs the caller's user id")
        usage = f'AddTasks takes {{"titles": [1 to {MAX_TITLES_PER_CALL} non-empty strings]}}'
        try:
            body = json.loads(request.payload)
        except ValueError as e:  # includes bad UTF-8
            raise invalid(f"{usage}: {e}") from None
        titles = body.get("titles") if isinstance(body, dict) else None
        if (
            not isinstance(titles, list)
            or not 1 <= len(titles) <= MAX_TITLES_PER_CALL
            or not all(isinstance(t, str) and t for t in titles)
        ):
            raise invalid(usage)
        created = self.store.add_tasks(user_key, titles)
        return rpc_pb2.InvokeResponse(payload=json.dumps({"created": created}).encode())


# ---------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Syncline example channel serving Task.")
    parser.add_argument("--db", required=True, help="SQLite database file (created if missing)")
    parser.add_argument(
        "--listen", default="127.0.0.1:7802", help="HOST:PORT to serve on (port 0: any free)"
    )
    parser.add_argument("--workers", type=int, default=32, help="RPC worker threads")
    args = parser.parse_args(argv)

    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        parser.error("--listen must be HOST:PORT")

    stopping = threading.Event()
    # Stop on SIGTERM / SIGINT: the main thread waits for this event.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())

    store = Store(args.db)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    channel_pb2_grpc.add_ChannelServicer_to_server(TaskChannel(store, stopping), server)
    rpc_pb2_grpc.add_MobileServiceServicer_to_server(TaskService(store), server)
    try:
        bound = server.add_insecure_port(args.listen)
    except RuntimeError as e:
        print(f"cannot listen on {args.listen}: {e}", file=sys.stderr)
        return 1
    if bound == 0:
        print(f"cannot listen on {args.listen}", file=sys.stderr)
        return 1
    server.start()
    print(f"listening on {host}:{bound}", flush=True)

    while not stopping.wait(0.2):
        pass
    # Ends Watch loops (they check `stopping`) and in-flight RPCs after a short grace.
    server.stop(grace=2).wait()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
