"""The live stream WS /api/otel/v1/ws (docs/api.md, agent/api/api_stream.c) against a real
`dlotel serve`, with Debian's python3-websockets (10.4: the asyncio client) and, where the test
needs control over the bytes or the socket, a raw TCP socket doing the RFC 6455 handshake itself.

What a user of the stream checks: rows of a committed request arrive within a second of the
ingest's 200, with exactly the keys (and values) the REST API gives for the same rows; each user
sees only their own rows and an admin sees all; the subscribe message narrows by signal and
service; a client that stops reading is closed (1013) or dropped without slowing a fast client
down; bad or missing tokens are closed with 1008, oversized client messages with 1009, other
garbage with 1003; pings are answered; a plain GET is refused with 426; with auth off a client
without a token gets rows; a daemon that stops says 1001.

Secrets reach the daemon in a 0600 config file (test_api.Serve), never in argv or its
environment; tokens are minted with python3-jwt.
"""

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time

import pytest
import requests
import websockets
import websockets.exceptions

import itlib
from test_api import (AUTH_SETTINGS, IAM_KEY, T0, Serve, gauge_request, hdr, logs_request, sid,
                      span, tid, token, traces_request)

ALICE_TOK = token(sub="alice")
BOB_TOK = token(uid="bob", sub="not-bob")
ADMIN_TOK = token(sub="root", roles=["admin"])
# What the stream accepts from a client at most (API_STREAM_MAX_CLIENT_MSG in api_stream.c).
MAX_CLIENT_MSG = 4096
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    serve = Serve(tmp_path_factory.mktemp("ws"), AUTH_SETTINGS).start()
    try:
        yield serve
    finally:
        serve.stop()


def ws_url(serve, tok=None):
    url = f"ws://127.0.0.1:{serve.api_port}/api/otel/v1/ws"
    return url + (f"?token={tok}" if tok is not None else "")


def connect(serve, tok=None, **kw):
    # The daemon's own pings (every 20 s) are answered by the library; ours are explicit.
    return websockets.connect(ws_url(serve, tok), max_size=None, ping_interval=None,
                              close_timeout=3, open_timeout=10, **kw)


async def recv_msg(ws, timeout=10.0):
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), "the stream sends text messages"
    msg = json.loads(raw)
    assert set(msg) == {"signal", "data", "count"}, msg.keys()
    assert msg["signal"] in ("traces", "logs", "metrics")
    assert msg["count"] == len(msg["data"]) > 0
    return msg


async def recv_rows(ws, signal, n, timeout=10.0):
    """Messages until |n| rows of |signal| came; returns (rows, arrival time of the last)."""
    rows = []
    deadline = time.monotonic() + timeout
    while len(rows) < n:
        msg = await recv_msg(ws, max(0.01, deadline - time.monotonic()))
        if msg["signal"] == signal:
            rows += msg["data"]
    assert len(rows) == n, (len(rows), n)
    return rows, time.monotonic()


async def expect_silence(ws, seconds=0.3):
    """Nothing arrives for |seconds| (used only after a sentinel proved ordering elsewhere)."""
    with pytest.raises(asyncio.TimeoutError):
        msg = await asyncio.wait_for(ws.recv(), seconds)
        raise AssertionError(f"unexpected message {msg[:300]}")


async def settle(ws):
    """A ping answered means every frame sent before it (a subscribe) was processed: the
    server reads a connection's frames in order."""
    pong = await ws.ping(b"settle")
    await asyncio.wait_for(pong, 5)


async def close_code(ws, timeout=5.0):
    """Reads until the server closes; returns its close code."""
    with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
        deadline = time.monotonic() + timeout
        while True:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
    assert e.value.rcvd is not None, f"closed without a close frame: {e.value!r}"
    return e.value.rcvd.code


def post(url, body, headers=None):
    """POSTs and returns the time of the answer; asserts 200."""
    if isinstance(body, (dict, list)):
        data, ctype = json.dumps(body), "application/json"
    else:
        data, ctype = body, "application/x-protobuf"
    r = requests.post(url, data=data, headers={"Content-Type": ctype, **(headers or {})},
                      timeout=30)
    t = time.monotonic()
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    return t


def post_receiver(serve, signal, body):
    return post(f"{serve.http_url}/v1/{signal}", body)


def post_api(serve, signal, body, tok):
    return post(f"{serve.base}/otlp/v1/{signal}", body, hdr(tok))


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def one_trace(prefix, service, user, n_spans=1, i=1):
    t = tid(prefix, i)
    return traces_request([(service, user, [span(t, sid(100 + k), f"op {k}", T0 + k * 10**6, 2)
                                            for k in range(n_spans)])])


def run(coro):
    return asyncio.run(coro)


# ---------- latency ----------

def test_rows_arrive_within_a_second_of_the_200(api):
    pb = itlib.payload("traces_512.pb")

    async def main():
        async with connect(api, ADMIN_TOK) as ws:
            await settle(ws)
            figures = {}
            for route, send in (("receiver", lambda: post_receiver(api, "traces", pb)),
                                ("api", lambda: post_api(api, "traces", pb, ALICE_TOK))):
                task = asyncio.create_task(recv_rows(ws, "traces", 512))
                t200 = await in_thread(send)
                rows, arrived = await task
                assert len(rows) == 512
                latency = arrived - t200
                figures[route] = latency
                # Negative: the rows came before the 200 (the sink's tap runs first).
                assert latency < 1.0, f"{route}: rows {latency:.3f} s after the 200"
                if route == "api":
                    assert {r["user_uid"] for r in rows} == {"alice"}
            print(f"\nws latency (message arrival - 200), 512 spans: "
                  + ", ".join(f"{k} {v * 1000:+.1f} ms" for k, v in figures.items()))

    run(main())


def test_a_request_bigger_than_the_client_queue_still_arrives(api):
    # Eight SDK requests back to back are one valid request of 4096 spans (protobuf merges
    # repeated fields): about 6 MB of rows, more than a client's queue (4 MiB). A client that
    # keeps up must get it all the same.
    pb = itlib.payload("traces_512.pb") * 8

    async def main():
        async with connect(api, ADMIN_TOK) as ws:
            await settle(ws)
            for _ in range(2):
                task = asyncio.create_task(recv_msg(ws, 20))
                t200 = await in_thread(post_receiver, api, "traces", pb)
                msg = await task
                assert msg["signal"] == "traces" and msg["count"] == 4096
                print(f"\n4096 spans: message {time.monotonic() - t200:+.3f} s after the 200")
            await settle(ws)
        assert stats(api)["stream_dropped"] == dropped

    dropped = stats(api)["stream_dropped"]
    run(main())


# ---------- row shape ----------

def rest_sql(serve, sql, tok=ADMIN_TOK):
    r = requests.post(serve.base + "/query/", json={"sql": sql}, headers=hdr(tok), timeout=30)
    assert r.status_code == 200, r.text[:500]
    return r.json()["data"]


def test_rows_have_the_rest_keys_and_values(api):
    spans_req = traces_request([("svc-keys", "alice", [
        span(tid("d1", 1), sid(1), "root op", T0, 25, attrs={"http.route": "/x", "n": "1"}),
        span(tid("d1", 1), sid(2), "child op", T0 + 10**6, 5, parent=sid(1), status=2)])])
    logs_req = logs_request("svc-keys", "alice", [
        (T0 + 7, 13, "WARN", "disk nearly full", tid("d1", 1), sid(1))])
    gauge_req = gauge_request("svc-keys", "alice", "keys.gauge", [(T0, 2.5), (T0 + 10**9, 3.0)])

    async def main():
        async with connect(api, ADMIN_TOK) as ws:
            await settle(ws)
            got = {}
            for signal, body, n in (("traces", spans_req, 2), ("logs", logs_req, 1),
                                    ("metrics", gauge_req, 2)):
                task = asyncio.create_task(recv_rows(ws, signal, n))
                await in_thread(post_receiver, api, signal, body)
                got[signal] = (await task)[0]
            # The JS SDK's logs and metrics (sums, histograms, gauges of every kind).
            for signal, name in (("logs", "logs_512.pb"), ("metrics", "metrics.pb")):
                task = asyncio.create_task(recv_msg(ws))
                await in_thread(post_receiver, api, signal, itlib.payload(name))
                msg = await task
                assert msg["signal"] == signal
                got[signal + "_sdk"] = msg["data"]
            return got

    got = run(main())

    r = requests.get(f"{api.base}/traces/{tid('d1', 1)}", headers=hdr(ADMIN_TOK), timeout=30)
    assert r.status_code == 200, r.text[:300]
    rest_spans = {row["span_id"]: row for row in r.json()["data"]}
    ws_spans = {row["span_id"]: row for row in got["traces"]}
    assert set(rest_spans) == set(ws_spans) == {sid(1), sid(2)}
    for k in rest_spans:
        assert list(ws_spans[k]) == list(rest_spans[k]), "span keys (and their order)"
        assert ws_spans[k] == rest_spans[k], k

    for table, signal in (("logs", "logs"), ("metrics", "metrics")):
        keys = list(rest_sql(api, f"SELECT * FROM {table} LIMIT 1")[0])
        for row in got[signal] + got[signal + "_sdk"]:
            assert list(row) == keys, (table, sorted(set(row) ^ set(keys)))
        # The same rows by REST: equal values too.
        rest = rest_sql(api, f"SELECT * FROM {table} WHERE service_name = 'svc-keys' "
                             f"ORDER BY timestamp_unix_nano")
        assert sorted(got[signal], key=lambda x: x["timestamp_unix_nano"]) == rest, table


# ---------- per-user filtering ----------

def test_each_user_sees_only_their_rows_and_admin_sees_all(api):
    both = traces_request([
        ("svc-u", "alice", [span(tid("e1", 1), sid(1), "alice span", T0, 3)]),
        ("svc-u", "bob", [span(tid("e2", 1), sid(2), "bob span", T0, 3),
                          span(tid("e2", 1), sid(3), "bob span 2", T0, 3, parent=sid(2))])])
    bob_only_logs = logs_request("svc-u", "bob", [(T0, 9, "INFO", "bob's log", "", "")])
    alice_only_logs = logs_request("svc-u", "alice", [(T0, 9, "INFO", "alice's log", "", "")])

    async def main():
        async with connect(api, ALICE_TOK) as alice, connect(api, BOB_TOK) as bob, \
                connect(api, ADMIN_TOK) as admin, connect(api, IAM_KEY) as iam:
            for ws in (alice, bob, admin, iam):
                await settle(ws)
            await in_thread(post_receiver, api, "traces", both)
            a = (await recv_msg(alice))["data"]
            b = (await recv_msg(bob))["data"]
            assert [r["span_name"] for r in a] == ["alice span"]
            assert {r["user_uid"] for r in a} == {"alice"}
            assert sorted(r["span_name"] for r in b) == ["bob span", "bob span 2"]
            assert {r["user_uid"] for r in b} == {"bob"}
            for ws in (admin, iam):
                rows = (await recv_msg(ws))["data"]
                assert sorted(r["user_uid"] for r in rows) == ["alice", "bob", "bob"]
            # Bob's logs, then alice's: alice's first message must be her own (a leak of
            # bob's would come first, the stream keeps order).
            await in_thread(post_receiver, api, "logs", bob_only_logs)
            await in_thread(post_receiver, api, "logs", alice_only_logs)
            m = await recv_msg(alice)
            assert m["signal"] == "logs" and [r["body"] for r in m["data"]] == ["alice's log"]
            m = await recv_msg(bob)
            assert m["signal"] == "logs" and [r["body"] for r in m["data"]] == ["bob's log"]
            for ws in (admin, iam):
                assert [r["body"] for r in (await recv_msg(ws))["data"]] == ["bob's log"]
                assert [r["body"] for r in (await recv_msg(ws))["data"]] == ["alice's log"]
            # Ingest through the API with alice's token: her user on every row, whatever the
            # resource says; bob gets nothing of it (his next message is the sentinel).
            await in_thread(post_api, api, "traces", one_trace("e3", "svc-u", "bob"), ALICE_TOK)
            await in_thread(post_receiver, api, "logs", bob_only_logs)
            m = await recv_msg(alice)
            assert m["signal"] == "traces" and [r["user_uid"] for r in m["data"]] == ["alice"]
            m = await recv_msg(bob)
            assert m["signal"] == "logs", "bob got alice's API ingest"
            await expect_silence(alice)

    run(main())


# ---------- subscribe ----------

def test_subscribe_narrows_by_signal_and_service(api):
    async def main():
        async with connect(api, ADMIN_TOK) as logs_only, connect(api, ADMIN_TOK) as svc_x, \
                connect(api, ADMIN_TOK) as everything:
            await logs_only.send(json.dumps({"signals": ["logs"]}))
            await svc_x.send(json.dumps({"signals": ["traces", "logs"],
                                         "service_name": "svc-x"}))
            for ws in (logs_only, svc_x, everything):
                await settle(ws)
            sent = [("traces", one_trace("f1", "svc-x", "alice")),
                    ("traces", one_trace("f2", "svc-y", "alice")),
                    ("metrics", gauge_request("svc-x", "alice", "sub.gauge", [(T0, 1.0)])),
                    ("logs", logs_request("svc-y", "alice", [(T0, 9, "INFO", "y log", "", "")])),
                    # A request with both services: svc_x gets only its row.
                    ("logs", {"resourceLogs": (
                        logs_request("svc-y", "bob", [(T0, 9, "INFO", "y2", "", "")])
                        ["resourceLogs"] +
                        logs_request("svc-x", "bob", [(T0, 9, "INFO", "x log", "", "")])
                        ["resourceLogs"])})]
            for signal, body in sent:
                await in_thread(post_receiver, api, signal, body)
            got = {}
            for name, ws, n in (("logs_only", logs_only, 2), ("svc_x", svc_x, 2),
                                ("everything", everything, 5)):
                got[name] = [await recv_msg(ws) for _ in range(n)]
                await expect_silence(ws)
            assert [(m["signal"], [r["body"] for r in m["data"]]) for m in got["logs_only"]] == \
                [("logs", ["y log"]), ("logs", ["y2", "x log"])]
            assert [(m["signal"], m["count"]) for m in got["svc_x"]] == [("traces", 1),
                                                                          ("logs", 1)]
            assert got["svc_x"][0]["data"][0]["trace_id"] == tid("f1", 1)
            assert got["svc_x"][1]["data"][0]["body"] == "x log"
            assert [m["signal"] for m in got["everything"]] == \
                ["traces", "traces", "metrics", "logs", "logs"]
            # service_name null lifts the service filter; signals stay as they were.
            await svc_x.send(json.dumps({"service_name": None}))
            await settle(svc_x)
            await in_thread(post_receiver, api, "traces", one_trace("f3", "svc-z", "alice"))
            await in_thread(post_receiver, api, "metrics",
                            gauge_request("svc-z", "alice", "sub.gauge", [(T0, 1.0)]))
            await in_thread(post_receiver, api, "logs",
                            logs_request("svc-z", "alice", [(T0, 9, "INFO", "z", "", "")]))
            assert [(await recv_msg(svc_x))["signal"] for _ in range(2)] == ["traces", "logs"]
            await expect_silence(svc_x)

    run(main())


@pytest.mark.parametrize("msg", [
    '{"signals": ["traces", "profiles"]}', '{"signals": "traces"}', '["traces"]', "not json",
    '{"service_name": ""}', '{"service_name": 7}', b'{"signals": ["traces"]}'])
def test_invalid_subscribe_or_binary_gets_1003(api, msg):
    async def main():
        async with connect(api, ADMIN_TOK) as ws:
            await ws.send(msg)
            assert await close_code(ws) == 1003

    run(main())


# ---------- slow and fast clients ----------

class RawWs:
    """A WebSocket client on a plain socket: the handshake by hand, then whatever the test
    wants, including not reading at all."""

    def __init__(self, port, tok, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so the window the daemon sees is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET /api/otel/v1/ws?token=" + tok.encode() + b" HTTP/1.1\r\n"
                          b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            d = self.sock.recv(1)
            assert d, "closed during the handshake"
            head += d
        assert head.startswith(b"HTTP/1.1 101 "), head
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        assert fields.get(b"sec-websocket-accept") == accept, head
        self.buf = b""

    def frames(self, timeout=10.0):
        """Yields (opcode, payload) until the server closes the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        while True:
            while True:
                f = self._parse()
                if f is None:
                    break
                yield f
            try:
                d = self.sock.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                return
            if not d:
                return
            self.buf += d

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        op, n, i = b[0] & 15, b[1] & 127, 2
        assert not b[1] & 128, "server frames are never masked"
        if n == 126:
            if len(b) < 4:
                return None
            n, i = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = struct.unpack(">Q", b[2:10])[0], 10
        if len(b) < i + n:
            return None
        self.buf = b[i + n:]
        return op, b[i:i + n]

    def send_frame(self, op, payload, mask=True, fin=True):
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | op])
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack(">H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack(">Q", n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.sock.sendall(head + payload)

    def close_code(self, timeout=5.0):
        """The code of the server's close frame (None: the connection ended without one)."""
        for op, payload in self.frames(timeout):
            if op == 8:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        return None

    def close(self):
        self.sock.close()


def stats(serve):
    r = requests.get(serve.base + "/stats", headers=hdr(ADMIN_TOK), timeout=30)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def wait_clients(serve, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while stats(serve)["stream_clients"] != n:
        assert time.monotonic() < deadline, f"stream_clients {stats(serve)} != {n}"
        time.sleep(0.05)


def test_slow_client_is_closed_and_fast_client_gets_everything(api):
    pb = itlib.payload("traces_512.pb")
    wait_clients(api, 0)
    base_dropped = stats(api)["stream_dropped"]

    async def main():
        slow = RawWs(api.api_port, ADMIN_TOK, rcvbuf=4096)
        try:
            async with connect(api, ADMIN_TOK) as fast:
                await settle(fast)
                rows = 0

                async def reader():
                    nonlocal rows
                    while True:
                        msg = await recv_msg(fast, 15)
                        assert msg["signal"] == "traces"
                        rows += msg["count"]

                posted = 0
                task = asyncio.create_task(reader())
                start = time.monotonic()
                closed_at = None
                # A rendered request of 512 spans is about 0.8 MB: the slow client's queue
                # (4 MiB), the server's high water mark and the socket buffers fill after a
                # dozen; then 8 drops in a row close it. Bounded at 25 s either way.
                while time.monotonic() - start < 25:
                    await in_thread(post_receiver, api, "traces", pb)
                    posted += 1
                    s = await in_thread(stats, api)
                    if s["stream_clients"] == 1:
                        closed_at = posted
                        break
                assert closed_at is not None, \
                    f"the slow client is still connected after {posted} requests"
                assert stats(api)["stream_dropped"] >= base_dropped + 8
                deadline = time.monotonic() + 20
                while rows < posted * 512 and not task.done():
                    assert time.monotonic() < deadline, \
                        f"the fast client got {rows} of {posted * 512} rows: {stats(api)}"
                    await asyncio.sleep(0.05)
                if task.done():
                    task.result()  # The reader's failure, if any.
                task.cancel()
                assert rows == posted * 512
                # The fast client is still fine.
                await settle(fast)
                print(f"\nslow client closed after {closed_at} requests "
                      f"({time.monotonic() - start:.1f} s); fast client got {rows} rows")
            # What the slow client finally reads: data frames, then the close frame with 1013,
            # unless the daemon gave up writing it to a full socket and just dropped it.
            codes = []
            for op, payload in slow.frames():
                if op == 8:
                    codes.append(struct.unpack(">H", payload[:2])[0])
                    break
            assert codes in ([], [1013]), codes
        finally:
            slow.close()

    run(main())


MAX_CLIENTS = 256  # DEFAULT_MAX_CLIENTS in api_stream.c


def test_max_clients_then_503(api):
    wait_clients(api, 0)
    clients = []
    try:
        for _ in range(MAX_CLIENTS):
            clients.append(RawWs(api.api_port, BOB_TOK))
        assert stats(api)["stream_clients"] == MAX_CLIENTS
        # One more: refused before the upgrade, with a JSON error.
        r = raw_get(api, GOOD)
        assert r.status == 503, r
        assert json.loads(r.body)["success"] is False
        # One leaves: the next one gets in.
        clients.pop().close()
        wait_clients(api, MAX_CLIENTS - 1)
        clients.append(RawWs(api.api_port, BOB_TOK))
        assert raw_get(api, GOOD).status == 503
    finally:
        for c in clients:
            c.close()
    wait_clients(api, 0)
    assert raw_get(api, GOOD).status == 101


# ---------- tokens ----------

@pytest.mark.parametrize("tok", [None, "", "x.y.z", token(sub="alice", key="not-the-secret"),
                                 token(sub="alice", exp_in=-5), IAM_KEY[:-1]])
def test_missing_or_bad_token_is_closed_with_1008(api, tok):
    async def main():
        async with connect(api, tok) as ws:
            assert await close_code(ws) == 1008
        await in_thread(post_receiver, api, "traces", one_trace("a8", "svc-t", "alice"))

    run(main())
    wait_clients(api, 0)


def test_bearer_header_works_too(api):
    async def main():
        async with connect(api, extra_headers={"Authorization": f"Bearer {ALICE_TOK}"}) as ws:
            await settle(ws)
            await in_thread(post_receiver, api, "traces", one_trace("b8", "svc-t", "alice"))
            assert (await recv_msg(ws))["data"][0]["trace_id"] == tid("b8", 1)

    run(main())


# ---------- client messages and control frames ----------

def padded_subscribe(size):
    head, tail = '{"signals":["traces","logs","metrics"]', "}"
    return head + " " * (size - len(head) - len(tail)) + tail


def test_client_message_limit_1009(api):
    async def main():
        # At the limit: accepted, the connection stays and still streams.
        async with connect(api, ALICE_TOK) as ws:
            msg = padded_subscribe(MAX_CLIENT_MSG)
            assert len(msg.encode()) == MAX_CLIENT_MSG
            await ws.send(msg)
            await settle(ws)
            await in_thread(post_receiver, api, "traces", one_trace("c9", "svc-t", "alice"))
            assert (await recv_msg(ws))["data"][0]["trace_id"] == tid("c9", 1)
        # One byte more: 1009.
        async with connect(api, ALICE_TOK) as ws:
            await ws.send(padded_subscribe(MAX_CLIENT_MSG + 1))
            assert await close_code(ws) == 1009
        # Over the limit in fragments of a message: 1009 as well.
        async with connect(api, ALICE_TOK) as ws:
            await ws.send(["x" * 3000, "y" * 3000])
            assert await close_code(ws) == 1009

    run(main())


def test_ping_is_answered(api):
    async def main():
        async with connect(api, BOB_TOK) as ws:
            for payload in (b"", b"p" * 125, b"\x00\xff"):
                pong = await ws.ping(payload)
                await asyncio.wait_for(pong, 5)
            # Our close is answered with 1000 at once (not after the close timeout).
            t = time.monotonic()
            await ws.close()
            assert ws.close_code == 1000 and time.monotonic() - t < 1.0

    run(main())
    wait_clients(api, 0)


def test_protocol_errors_are_closed(api):
    # RFC 6455 7.4.1: 1002 protocol error, 1007 invalid UTF-8 in a text message. Frames that
    # wslay's frame parser itself refuses get a close frame without a code (the peer reads
    # 1005), but a close frame all the same, not a dropped connection.
    cases = {
        "unmasked frame": (lambda w: w.send_frame(1, b'{"signals":["logs"]}', mask=False), 1002),
        "continuation first": (lambda w: w.send_frame(0, b"x"), 1002),
        "reserved opcode": (lambda w: w.send_frame(3, b"x"), 1002),
        "text not UTF-8": (lambda w: w.send_frame(1, b'{"service_name":"\xff"}'), 1007),
        "ping over 125 bytes": (lambda w: w.send_frame(9, b"p" * 126), 1005),
        "fragmented ping": (lambda w: w.send_frame(9, b"p", fin=False), 1005),
    }
    for name, (send, code) in cases.items():
        w = RawWs(api.api_port, ALICE_TOK)
        try:
            send(w)
            assert w.close_code() == code, name
        finally:
            w.close()
    wait_clients(api, 0)
    # Nothing of the tokens used in this module reached the log.
    log = itlib.tail(api.log_path, 1 << 22)
    for tok in (ALICE_TOK, BOB_TOK, ADMIN_TOK, IAM_KEY, "x.y.z"):
        assert tok not in log


# ---------- handshake refusals ----------

def raw_get(serve, headers, method="GET"):
    with itlib.RawConn(serve.api_port) as c:
        c.send((f"{method} /api/otel/v1/ws?token={ALICE_TOK} HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        return c.read_response()


GOOD = {"Upgrade": "websocket", "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


def test_handshake_refusals(api):
    # A plain GET: 426 Upgrade Required, naming the protocol (RFC 9110 section 15.5.22).
    r = raw_get(api, {})
    assert r.status == 426, r
    assert r.header("upgrade", "").lower() == "websocket", r
    assert json.loads(r.body)["success"] is False
    r = requests.get(api.base + "/ws", params={"token": ALICE_TOK}, timeout=10)
    assert r.status_code == 426 and r.json()["success"] is False
    # The RFC 6455 example key gives the RFC's accept value.
    r = raw_get(api, GOOD)
    assert r.status == 101 and r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    cases = [({**GOOD, "Sec-WebSocket-Version": "8"}, 426),
             ({k: v for k, v in GOOD.items() if k != "Sec-WebSocket-Version"}, 426),
             ({**GOOD, "Connection": "keep-alive"}, 400),
             ({**GOOD, "Sec-WebSocket-Key": "c2hvcnQ="}, 400),
             ({k: v for k, v in GOOD.items() if k != "Sec-WebSocket-Key"}, 400)]
    for headers, status in cases:
        r = raw_get(api, headers)
        assert r.status == status, (headers, r)
        if status == 426:
            assert r.header("sec-websocket-version") == "13", r
    r = raw_get(api, GOOD, method="POST")
    assert r.status == 405, r
    assert requests.get(api.base + "/ping", timeout=10).status_code == 200


# ---------- auth off ----------

def test_auth_off_no_token_gets_rows_and_shutdown_says_1001(tmp_path):
    serve = Serve(tmp_path).start()
    try:
        async def main():
            async with connect(serve) as ws:
                await settle(ws)
                await in_thread(post_receiver, serve, "traces",
                                one_trace("0f", "svc-open", "carol", n_spans=3))
                rows = (await recv_msg(ws))["data"]
                assert [r["service_name"] for r in rows] == ["svc-open"] * 3
                assert {r["user_uid"] for r in rows} == {"carol"}
                # Shutting down with a client connected: close code 1001, clean exit.
                stopper = threading.Thread(target=serve.stop)
                stopper.start()
                try:
                    assert await close_code(ws, timeout=15) == 1001
                finally:
                    await in_thread(stopper.join)

        run(main())
        assert serve.returncode == 0
    finally:
        if serve.alive():
            serve.stop()
