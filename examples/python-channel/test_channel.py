"""Drives channel.py, run as a subprocess, through its generated gRPC client.

Run via ./run-tests.sh (it creates the venv and generates the stubs into gen/).
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import selectors
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "gen"))

import json  # noqa: E402

from syncline.v1 import channel_pb2, channel_pb2_grpc, common_pb2, rpc_pb2, rpc_pb2_grpc  # noqa: E402

STARTUP_TIMEOUT = 30.0
STREAM_TIMEOUT = 10.0
RPC_TIMEOUT = 10.0

_users = itertools.count(1)


# ---------------------------------------------------------------------------------------
# Harness


class ChannelProcess:
    """channel.py in a subprocess, ready once it printed its `listening on` line."""

    def __init__(self, db_path: str, *extra_args: str):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "channel.py"), "--db", db_path,
             "--listen", "127.0.0.1:0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=None,  # inherited: shows up in pytest's output on failure
            text=True,
        )
        self.db_path = db_path
        self.address = self._wait_listening()
        self.grpc_channel = grpc.insecure_channel(self.address)
        grpc.channel_ready_future(self.grpc_channel).result(timeout=STARTUP_TIMEOUT)
        self.stub = channel_pb2_grpc.ChannelStub(self.grpc_channel)
        self.mobile = rpc_pb2_grpc.MobileServiceStub(self.grpc_channel)

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise TimeoutError("channel.py did not print 'listening on' in time")
                if not sel.select(timeout=left):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    code = self.proc.wait(timeout=STARTUP_TIMEOUT)
                    raise RuntimeError(f"channel.py exited with {code} before listening")
                if line.startswith("listening on "):
                    return line[len("listening on "):].strip()
        finally:
            sel.close()

    def stop(self) -> int:
        """Stops the process by its PID with SIGTERM; returns its exit code."""
        if hasattr(self, "grpc_channel"):
            self.grpc_channel.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.proc.stdout.close()
        return self.proc.returncode


class Stream:
    """Reads a server stream on a thread so that the test can wait with a timeout."""

    _END = object()

    def __init__(self, call):
        self.call = call
        self.items: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        try:
            for item in self.call:
                self.items.put(item)
        except grpc.RpcError as e:
            self.items.put(e)
        self.items.put(self._END)

    def next(self, timeout: float = STREAM_TIMEOUT):
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stream message within {timeout}s") from None
        if item is self._END:
            raise AssertionError("stream ended")
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def close(self):
        self.call.cancel()
        self.thread.join(timeout=STREAM_TIMEOUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ChannelProcess(str(tmp_path_factory.mktemp("db") / "tasks.db"))
    yield proc
    assert proc.stop() == 0, "channel.py should exit cleanly on SIGTERM"


@pytest.fixture
def stub(server):
    return server.stub


@pytest.fixture
def user():
    """A fresh user partition per test, so tests don't see each other's tasks."""
    return f"user-{next(_users)}"


# ---------------------------------------------------------------------------------------
# Helpers


def s(v):
    return common_pb2.Value(string_value=v)


def part(user_key):
    return common_pb2.PartitionKey(source="Task", key=user_key)


def create(stub, user_key, fields, mutation_id=""):
    resp = stub.Create(
        channel_pb2.WriteRequest(
            partition=part(user_key),
            record=common_pb2.Record(id="tmp-1", fields=fields),
            mutation_id=mutation_id,
            caller=channel_pb2.Caller(user_id=user_key, client_id="c1"),
        ),
        timeout=RPC_TIMEOUT,
    )
    assert resp.WhichOneof("result") == "record"
    return resp.record


def update(stub, user_key, task_id, fields, base_version=0):
    return stub.Update(
        channel_pb2.WriteRequest(
            partition=part(user_key),
            record=common_pb2.Record(id=task_id, fields=fields),
            base_version=base_version,
            caller=channel_pb2.Caller(user_id=user_key),
        ),
        timeout=RPC_TIMEOUT,
    )


def delete(stub, user_key, task_id, base_version=0):
    return stub.Delete(
        channel_pb2.WriteRequest(
            partition=part(user_key),
            record=common_pb2.Record(id=task_id),
            base_version=base_version,
            caller=channel_pb2.Caller(user_id=user_key),
        ),
        timeout=RPC_TIMEOUT,
    )


def query(stub, user_key):
    return list(stub.Query(channel_pb2.QueryRequest(partition=part(user_key)), timeout=RPC_TIMEOUT))


def watch(stub, token=b""):
    return Stream(stub.Watch(channel_pb2.WatchRequest(sources=["Task"], resume_token=token)))


def single_change(batch):
    """The (op, partition key, id, record) of a batch that holds one change."""
    assert len(batch.partitions) == 1
    pc = batch.partitions[0]
    assert pc.partition.source == "Task"
    if pc.upserts:
        assert len(pc.upserts) == 1 and not pc.deletes
        return "upsert", pc.partition.key, pc.upserts[0].id, pc.upserts[0]
    assert len(pc.deletes) == 1
    return "delete", pc.partition.key, pc.deletes[0], None


def token_int(token: bytes) -> int:
    assert len(token) == 8
    return struct.unpack(">Q", token)[0]


def assert_status(code, fn, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kwargs)
    assert err.value.code() == code, err.value.details()
    return err.value


# ---------------------------------------------------------------------------------------
# Tests


def test_describe(stub):
    resp = stub.Describe(channel_pb2.DescribeRequest(), timeout=RPC_TIMEOUT)
    assert [src.name for src in resp.sources] == ["Task"]
    task = resp.sources[0]
    assert task.partitioning == "user"
    assert set(task.capabilities) == {"create", "update", "delete", "search", "watch"}
    fields = {f.name: (f.type, f.required) for f in task.fields}
    assert fields["title"] == ("string", True)
    assert fields["done"] == ("bool", False)
    assert fields["priority"] == ("int", False)
    assert fields["estimate"] == ("double", False)
    assert fields["attachment"] == ("bytes", False)


def test_crud_round_trip_keeps_value_types(stub, user):
    fields = {
        "title": s("Write the Python channel"),
        "notes": common_pb2.Value(null_value=common_pb2.NULL_VALUE),
        "done": common_pb2.Value(bool_value=False),
        "priority": common_pb2.Value(int_value=-(2**63)),
        "estimate": common_pb2.Value(double_value=0.1),
        "attachment": common_pb2.Value(bytes_value=b"\x00\xffbin"),
    }
    rec = create(stub, user, fields)
    assert rec.id.startswith("task-") and rec.id != "tmp-1"
    assert rec.version == 1
    assert dict(rec.fields) == fields

    # Query returns it with every value of the same kind and value.
    [got] = query(stub, user)
    assert got == rec
    for name, v in fields.items():
        assert got.fields[name].WhichOneof("kind") == v.WhichOneof("kind"), name

    # Update merges the changed fields and bumps the version.
    resp = update(
        stub, user, rec.id,
        {"done": common_pb2.Value(bool_value=True),
         "priority": common_pb2.Value(int_value=2**63 - 1),
         "estimate": common_pb2.Value(double_value=-0.0),
         "notes": s("now with notes")},
        base_version=rec.version,
    )
    assert resp.WhichOneof("result") == "record"
    updated = resp.record
    assert updated.version == 2
    assert updated.fields["title"] == fields["title"]
    assert updated.fields["done"].bool_value is True
    assert updated.fields["priority"].int_value == 2**63 - 1
    assert math.copysign(1.0, updated.fields["estimate"].double_value) == -1.0
    assert updated.fields["notes"].string_value == "now with notes"
    assert query(stub, user) == [updated]

    # Doubles keep their bit pattern, NaN included.
    nan = struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0]
    resp = update(stub, user, rec.id, {"estimate": common_pb2.Value(double_value=nan)})
    stored = query(stub, user)[0].fields["estimate"].double_value
    assert struct.pack(">d", stored) == struct.pack(">d", nan)

    # Delete removes it.
    resp = delete(stub, user, rec.id)
    assert resp.WhichOneof("result") == "record"
    assert resp.record.id == rec.id
    assert query(stub, user) == []
    assert_status(grpc.StatusCode.NOT_FOUND, delete, stub, user, rec.id)


def test_create_ids_are_generated_and_query_streams_in_order(stub, user):
    ids = [create(stub, user, {"title": s(f"t{i}")}).id for i in range(5)]
    assert len(set(ids)) == 5
    assert all(i.startswith("task-") for i in ids)
    assert [r.id for r in query(stub, user)] == ids
    # Another user's partition is separate.
    assert query(stub, f"{user}-other") == []


def write_calls(server, mutation_id):
    """The ops of the write calls the channel received with this mutation id, in order."""
    db = sqlite3.connect(server.db_path)
    try:
        rows = db.execute(
            "SELECT op FROM write_calls WHERE mutation_id = ? ORDER BY n", (mutation_id,)
        ).fetchall()
    finally:
        db.close()
    return [row[0] for row in rows]


def test_create_with_same_mutation_id_is_applied_once(server, stub, user):
    first = create(stub, user, {"title": s("once")}, mutation_id=f"m-{user}")
    again = create(stub, user, {"title": s("once")}, mutation_id=f"m-{user}")
    assert again == first
    assert [r.id for r in query(stub, user)] == [first.id]
    # Both calls are counted, whatever their effect.
    assert write_calls(server, f"m-{user}") == ["create", "create"]


def test_update_conflict_returns_current_record(stub, user):
    rec = create(stub, user, {"title": s("v1")})
    ok = update(stub, user, rec.id, {"title": s("v2")}, base_version=1)
    assert ok.record.version == 2

    # Based on version 1, but the record is at 2: a conflict carrying the current record.
    resp = update(stub, user, rec.id, {"title": s("stale")}, base_version=1)
    assert resp.WhichOneof("result") == "conflict"
    assert resp.conflict.id == rec.id
    assert resp.conflict.version == 2
    assert resp.conflict.fields["title"].string_value == "v2"
    assert query(stub, user)[0].fields["title"].string_value == "v2"

    # A stale delete conflicts too and deletes nothing.
    resp = delete(stub, user, rec.id, base_version=1)
    assert resp.WhichOneof("result") == "conflict"
    assert len(query(stub, user)) == 1

    # base_version 0 writes unconditionally.
    assert update(stub, user, rec.id, {"title": s("v3")}).record.version == 3


def test_update_unknown_id_is_not_found(stub, user):
    assert_status(grpc.StatusCode.NOT_FOUND, update, stub, user, "task-999999", {"title": s("x")})
    # A task of another user is not found in this user's partition either.
    rec = create(stub, user, {"title": s("mine")})
    other = f"{user}-other"
    assert_status(grpc.StatusCode.NOT_FOUND, update, stub, other, rec.id, {"title": s("x")})


def test_invalid_arguments(stub, user):
    bad = grpc.StatusCode.INVALID_ARGUMENT
    # Missing required title, wrong type, unknown field, null title, value without kind.
    assert_status(bad, create, stub, user, {"done": common_pb2.Value(bool_value=True)})
    assert_status(bad, create, stub, user, {"title": common_pb2.Value(int_value=1)})
    assert_status(bad, create, stub, user, {"title": s("x"), "colour": s("red")})
    assert_status(bad, create, stub, user,
                  {"title": common_pb2.Value(null_value=common_pb2.NULL_VALUE)})
    assert_status(bad, create, stub, user, {"title": common_pb2.Value()})
    # Unknown source, empty partition key, empty id.
    with pytest.raises(grpc.RpcError) as err:
        stub.Create(channel_pb2.WriteRequest(
            partition=common_pb2.PartitionKey(source="Nope", key=user),
            record=common_pb2.Record(fields={"title": s("x")})), timeout=RPC_TIMEOUT)
    assert err.value.code() == bad
    assert_status(bad, create, stub, "", {"title": s("x")})
    assert_status(bad, update, stub, user, "", {"title": s("x")})
    # Nothing was stored by any of them.
    assert query(stub, user) == []
    # Malformed resume token.
    w = watch(stub, b"\x01\x02")
    with pytest.raises(grpc.RpcError) as err:
        w.next()
    assert err.value.code() == bad
    w.close()


def test_search_substring_on_title(stub, user):
    a = create(stub, user, {"title": s("Buy milk")})
    create(stub, user, {"title": s("Walk the dog")})
    c = create(stub, user, {"title": s("Buy MILK chocolate")})
    create(stub, f"{user}-other", {"title": s("buy milk too")})

    def search(needle, offset=0, limit=0):
        return stub.Search(
            channel_pb2.SearchRequest(
                source="Task", params={"title": s(needle)}, offset=offset, limit=limit,
                caller=channel_pb2.Caller(user_id=user),
            ),
            timeout=RPC_TIMEOUT,
        )

    resp = search("milk")
    assert [r.id for r in resp.records] == [a.id, c.id]
    assert resp.total == 2
    assert resp.partition == part(user)
    assert search("nothing like it").total == 0
    page = search("", offset=1, limit=1)
    assert page.total == 3 and len(page.records) == 1

    assert_status(grpc.StatusCode.INVALID_ARGUMENT, stub.Search,
                  channel_pb2.SearchRequest(source="Other",
                                            caller=channel_pb2.Caller(user_id=user)),
                  timeout=RPC_TIMEOUT)


def test_authenticate(stub):
    ok = stub.Authenticate(channel_pb2.AuthenticateRequest(username="demo", password="demo"),
                           timeout=RPC_TIMEOUT)
    assert ok.ok and ok.user_id == "demo"
    bad = stub.Authenticate(channel_pb2.AuthenticateRequest(username="demo", password="nope"),
                            timeout=RPC_TIMEOUT)
    assert not bad.ok and bad.user_id == "" and bad.message
    unknown = stub.Authenticate(
        channel_pb2.AuthenticateRequest(username="nobody", password="demo"), timeout=RPC_TIMEOUT)
    assert not unknown.ok


def test_watch_from_empty_token_sees_creates_in_order(stub, user):
    w = watch(stub)
    try:
        # Empty token starts from now: the first batch carries only the current position.
        start = w.next()
        assert list(start.partitions) == []
        last = token_int(start.resume_token)

        created = [create(stub, user, {"title": s(f"w{i}")}) for i in range(3)]
        for rec in created:
            batch = w.next()
            op, key, rid, got = single_change(batch)
            assert (op, key, rid) == ("upsert", user, rec.id)
            assert got == rec
            assert token_int(batch.resume_token) > last
            last = token_int(batch.resume_token)
    finally:
        w.close()


def test_watch_resume_replays_exactly_what_came_after(stub, user):
    w = watch(stub)
    try:
        w.next()  # position
        a = create(stub, user, {"title": s("a")})
        b = create(stub, user, {"title": s("b")})
        b2 = update(stub, user, b.id, {"done": common_pb2.Value(bool_value=True)}).record
        delete(stub, user, a.id)
        batches = [w.next() for _ in range(4)]
    finally:
        w.close()
    changes = [single_change(x)[:3] for x in batches]
    assert changes == [
        ("upsert", user, a.id), ("upsert", user, b.id), ("upsert", user, b.id),
        ("delete", user, a.id),
    ]

    # Resume after the first change: the other three come back, in order, with the same
    # tokens and the records as they were at each change.
    r = watch(stub, batches[0].resume_token)
    try:
        replayed = [r.next() for _ in range(3)]
        assert replayed == batches[1:]
        assert single_change(replayed[0])[3] == b
        assert single_change(replayed[1])[3] == b2
        # Then it follows live changes: the next batch is a new write, nothing else came in
        # between.
        c = create(stub, user, {"title": s("c")})
        op, key, rid, got = single_change(r.next())
        assert (op, key, rid) == ("upsert", user, c.id)
    finally:
        r.close()

    # Resuming from the last token replays nothing of the above: the next batch is new.
    last = watch(stub, batches[-1].resume_token)
    try:
        op, _, rid, _ = single_change(last.next())
        assert (op, rid) == ("upsert", c.id)
    finally:
        last.close()


def test_watch_token_ahead_of_feed_is_refused(stub):
    w = watch(stub, struct.pack(">Q", 2**63))
    try:
        with pytest.raises(grpc.RpcError) as err:
            w.next()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        w.close()


def test_feed_and_data_survive_restart(tmp_path):
    db = str(tmp_path / "restart.db")
    first = ChannelProcess(db)
    try:
        w = watch(first.stub)
        w.next()
        rec = create(first.stub, "u1", {"title": s("durable")})
        token = w.next().resume_token
        w.close()
        create(first.stub, "u1", {"title": s("after token")})
    finally:
        assert first.stop() == 0

    second = ChannelProcess(db)
    try:
        assert [r.fields["title"].string_value for r in query(second.stub, "u1")] == [
            "durable", "after token"]
        assert query(second.stub, "u1")[0] == rec
        r = watch(second.stub, token)
        op, _, _, got = single_change(r.next())
        assert op == "upsert" and got.fields["title"].string_value == "after token"
        # Ids keep counting after a restart.
        assert create(second.stub, "u1", {"title": s("new")}).id not in {rec.id}
        r.close()
    finally:
        assert second.stop() == 0


def test_cancelled_watches_end_and_free_their_worker(tmp_path):
    # With 3 worker threads, a Watch loop that outlived its cancelled RPC would hold a
    # worker for good: the fourth watch would never start.
    proc = ChannelProcess(str(tmp_path / "cancel.db"), "--workers", "3")
    try:
        for _ in range(8):
            w = watch(proc.stub)
            w.next()
            w.close()
        # Each cancelled loop gives its worker back within one poll; gRPC queues a new
        # RPC until a worker is free, so no sleep is needed (next() is bounded by a timeout).
        w = watch(proc.stub)
        assert list(w.next().partitions) == []
        w.close()
        proc.stub.Describe(channel_pb2.DescribeRequest(), timeout=RPC_TIMEOUT)
    finally:
        assert proc.stop() == 0


def invoke(server, method, payload: bytes, user_key: str, service="tasks"):
    return server.mobile.Invoke(
        rpc_pb2.InvokeRequest(
            service=service,
            method=method,
            payload=payload,
            caller=rpc_pb2.RpcCaller(user_id=user_key, client_id="c1"),
            call_id="call-1",
        ),
        timeout=RPC_TIMEOUT,
    )


def test_add_tasks_creates_them_in_one_transaction_and_feeds_watch(server, stub, user):
    w = watch(stub)
    try:
        w.next()  # the current position
        reply = invoke(server, "AddTasks", json.dumps({"titles": ["a", "b"]}).encode(), user)
        created = json.loads(reply.payload)["created"]
        assert len(created) == 2
        assert [rec.id for rec in query(stub, user)] == created
        assert [rec.fields["title"].string_value for rec in query(stub, user)] == ["a", "b"]
        seen = []
        while len(seen) < 2:
            for pc in w.next().partitions:
                assert pc.partition.key == user
                seen.extend(rec.id for rec in pc.upserts)
        assert seen == created
    finally:
        w.close()


def test_add_tasks_refuses_bad_calls_with_typed_statuses(server, stub, user):
    assert_status(grpc.StatusCode.NOT_FOUND, invoke, server, "Teleport", b"{}", user)
    assert_status(grpc.StatusCode.NOT_FOUND, invoke, server, "AddTasks", b"{}", user, service="billing")
    for payload in [b"not json", b"{}", b'{"titles": []}', b'{"titles": [""]}', b"\xff",
                    json.dumps({"titles": ["x"] * 101}).encode()]:
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, invoke, server, "AddTasks", payload, user)
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, invoke, server, "AddTasks", b'{"titles": ["x"]}', "")
    assert query(stub, user) == []
