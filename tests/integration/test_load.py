"""Connection load (issue 8): many idle connections and 1k active ones, held with bounded memory
and no descriptor leak, against one real `dlotel agent`.

The receivers accept at most max_connections connections each (agent/net http_listen_options,
default 4096, and no configuration key sets it), so one daemon holds at most 2 x 4096 idle
connections on its two OTLP listeners. test_idle_connections_to_the_cap holds exactly that and
checks the cap's boundary; test_10k_idle_connections_on_one_listener is what issue 8 asks for and
fails until agent/net lets the cap be raised (marked xfail, not strict, so that it turns green by
itself).

RLIMIT_NOFILE is raised to its hard limit in the test process before the daemon starts, so the
daemon inherits it.
"""

import json
import os
import resource
import socket
import time

import pytest

import itlib
from itlib import MiB, RawConn, http_request

CAP = 4096  # http_server.c: max_connections 0 means 4096


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fds(agent):
    return len(os.listdir(f"/proc/{agent.proc.pid}/fd"))


def rss(agent):
    with open(f"/proc/{agent.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_fds(agent, pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        n = fds(agent)
        if pred(n) or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


@pytest.fixture
def lagent(tmp_path):
    raise_nofile(2 * CAP + 3000)
    a = itlib.Agent(tmp_path).start()
    try:
        yield a
    finally:
        if a.alive():
            a.stop()
        else:
            pytest.fail(f"dlotel agent died (exit {a.proc.returncode}):\n{itlib.tail(a.log_path)}")


def open_idle(port, n):
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def still_open(socks):
    """How many of |socks| the daemon has not closed (no EOF/reset pending)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(1)
            if d:
                n += 1  # Data on an idle connection would be odd, but it is open.
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def good_request(agent, what):
    with RawConn(agent.http_port) as c:
        c.send(http_request("/v1/traces", itlib.trace_request(span_name=b"load")))
        r = c.read_response()
    assert r.status == 200, f"{what}: {r}"


def test_idle_connections_to_the_cap(lagent, tmp_path):
    a = lagent
    fd0, rss0 = fds(a), rss(a)
    # One short of the cap on the HTTP listener (the good request below takes the last slot),
    # the full cap on the gRPC listener.
    http_socks = open_idle(a.http_port, CAP - 1)
    grpc_socks = open_idle(a.grpc_port, CAP)
    n = wait_fds(a, lambda n: n >= fd0 + 2 * CAP - 1)
    assert n >= fd0 + 2 * CAP - 1, f"daemon holds {n - fd0} of {2 * CAP - 1} connections"
    good_request(a, "at the cap minus one")
    # Over the cap: a new connection is accepted and closed at once, the held ones stay.
    extra = open_idle(a.grpc_port, 1)[0]
    extra.settimeout(5)
    try:
        closed = extra.recv(1) == b""
    except ConnectionResetError:
        closed = True
    extra.close()
    assert closed, "a connection over max_connections was kept"
    time.sleep(1)
    held = still_open(http_socks) + still_open(grpc_socks)
    rss1 = rss(a)
    per_conn = (rss1 - rss0) / (2 * CAP - 1)
    stats = {"idle_held": held, "fds_before": fd0, "fds_held": fds(a),
             "rss_before_mib": round(rss0 / MiB, 1), "rss_held_mib": round(rss1 / MiB, 1),
             "rss_per_idle_connection_bytes": round(per_conn)}
    assert held == 2 * CAP - 1, stats
    assert per_conn < 16 * 1024, f"idle connections cost too much memory: {stats}"
    for s in http_socks + grpc_socks:
        s.close()
    n = wait_fds(a, lambda n: n <= fd0)
    stats["fds_after_close"] = n
    print(f"idle: {json.dumps(stats)}")
    (tmp_path / "idle.json").write_text(json.dumps(stats, indent=1))
    assert n <= fd0, f"descriptor leak: {n} open after closing everything, {fd0} before"
    good_request(a, "after the idle connections closed")


@pytest.mark.xfail(strict=False, reason=(
    "agent/net: max_connections is 4096 per listener (http_listen_options) and no config key "
    "raises it; 10k idle connections need receivers.max_connections (or a larger default)"))
def test_10k_idle_connections_on_one_listener(lagent):
    a = lagent
    raise_nofile(10_000 + 1000)
    fd0 = fds(a)
    socks = open_idle(a.http_port, 10_000)
    try:
        wait_fds(a, lambda n: n >= fd0 + 10_000, timeout=20)
        time.sleep(1)
        held = still_open(socks)
        assert held == 10_000, f"{held} of 10000 idle connections held"
    finally:
        for s in socks:
            s.close()
        wait_fds(a, lambda n: n <= fd0)


def test_1k_active_connections(lagent, tmp_path):
    """1000 keep-alive connections each sending a request per round for 10 rounds, next to 3000
    idle ones: every request answered 200, RSS bounded, descriptors back to where they were."""
    a = lagent
    fd0, rss0 = fds(a), rss(a)
    idle = open_idle(a.http_port, 3000)
    conns = [RawConn(a.http_port, timeout=30) for _ in range(1000)]
    req = http_request("/v1/traces", itlib.trace_request(span_name=b"active"))
    peak = 0
    t0 = time.monotonic()
    rounds = 10
    for rnd in range(rounds):
        for c in conns:
            c.send(req)
        for i, c in enumerate(conns):
            r = c.read_response()
            assert r.status == 200, (rnd, i, r)
        peak = max(peak, rss(a))
    elapsed = time.monotonic() - t0
    assert still_open(idle) == 3000
    for c in conns:
        c.close()
    for s in idle:
        s.close()
    n = wait_fds(a, lambda n: n <= fd0)
    stats = {"active": len(conns), "idle": 3000, "requests": rounds * len(conns),
             "requests_per_s": round(rounds * len(conns) / elapsed),
             "rss_before_mib": round(rss0 / MiB, 1), "rss_peak_mib": round(peak / MiB, 1),
             "fds_before": fd0, "fds_after": n}
    print(f"active: {json.dumps(stats)}")
    (tmp_path / "active.json").write_text(json.dumps(stats, indent=1))
    assert n <= fd0, f"descriptor leak: {stats}"
    assert peak - rss0 < 256 * MiB, stats
    good_request(a, "after the load")


# ---------- HTTP/2: bodies buffered per connection ----------

H2_STREAMS = 128         # the daemon's SETTINGS_MAX_CONCURRENT_STREAMS
H2_BODY_EACH = 8 * MiB   # under the 20 MiB max_body, so every byte is buffered
H2_FAIR_CAP = 256 * MiB  # what one connection should be allowed to pin, at most


def h2_fill_streams(agent, streams, each, timeout=120.0):
    """One HTTP/2 connection that opens |streams| requests and sends |each| body bytes on every
    one without ever ending them, obeying flow control (the daemon's WINDOW_UPDATEs). Returns the
    connection (still open) and the bytes sent."""
    import select
    import struct

    import h2raw
    c = h2raw.H2Conn(agent.http_port, timeout=30)
    conn_win, init_win = 65535, 65535
    stream_win = {}
    sent = {}
    chunk = b"\x0a" * (256 * 1024)
    max_frame = 16384
    for i in range(streams):
        sid = 2 * i + 1
        c.send(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, sid, h2raw.header_block()))
        stream_win[sid] = init_win
        sent[sid] = 0
    deadline = time.monotonic() + timeout
    while any(v < each for v in sent.values()) and time.monotonic() < deadline:
        # Take in what the daemon said (SETTINGS, WINDOW_UPDATE, RST_STREAM, GOAWAY).
        while True:
            r, _, _ = select.select([c.sock], [], [], 0)
            if not r and len(c.buf) < 9:
                break
            f = c.read_frame(timeout=1)
            if f is None:
                if c.eof:
                    raise AssertionError("the daemon closed the connection")
                break
            ftype, flags, sid, payload = f
            if ftype == h2raw.SETTINGS and not flags & h2raw.ACK:
                for off in range(0, len(payload), 6):
                    k, v = struct.unpack(">HI", payload[off:off + 6])
                    if k == 4:
                        for s in stream_win:
                            stream_win[s] += v - init_win
                        init_win = v
                    elif k == 5:
                        max_frame = v
                c.send(h2raw.frame(h2raw.SETTINGS, h2raw.ACK, 0))
            elif ftype == h2raw.WINDOW_UPDATE:
                inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                if sid == 0:
                    conn_win += inc
                elif sid in stream_win:
                    stream_win[sid] += inc
            elif ftype == h2raw.RST_STREAM:
                sent.pop(sid, None)
                stream_win.pop(sid, None)
            elif ftype == h2raw.GOAWAY:
                raise AssertionError(f"GOAWAY {payload!r}")
        progressed = False
        for sid in list(sent):
            n = min(max_frame, len(chunk), conn_win, stream_win[sid], each - sent[sid])
            if n <= 0:
                continue
            c.send(h2raw.frame(h2raw.DATA, 0, sid, chunk[:n]))
            conn_win -= n
            stream_win[sid] -= n
            sent[sid] += n
            progressed = True
        if not progressed:
            select.select([c.sock], [], [], 1.0)
    return c, sum(sent.values()), len(sent)


def test_h2_buffered_bodies_per_connection(lagent, tmp_path):
    """Known gap (agent/net): one HTTP/2 connection may hold 128 streams x max_body (20 MiB) of
    request bodies in memory at once, 2.5 GiB, because each stream's body is buffered whole and
    flow control hands the window back as soon as it is buffered. The test pins 128 x 8 MiB on
    one connection and reports the daemon's RSS growth; it passes once agent/net bounds the
    connection's buffered bytes (H2_FAIR_CAP), and is an xfail with the figure until then. The
    daemon must in any case survive and serve others, and give the memory back when the
    connection goes."""
    a = lagent
    rss0 = rss(a)
    t0 = time.monotonic()
    c, total, open_streams = h2_fill_streams(a, H2_STREAMS, H2_BODY_EACH)
    held = rss(a)
    good_request(a, "while one connection pins its bodies")
    c.close()
    deadline = time.monotonic() + 10
    while rss(a) > rss0 + (held - rss0) / 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    after = rss(a)
    stats = {"streams": H2_STREAMS, "body_each_mib": H2_BODY_EACH / MiB,
             "streams_still_open": open_streams, "sent_mib": round(total / MiB),
             "seconds": round(time.monotonic() - t0, 1),
             "rss_before_mib": round(rss0 / MiB, 1), "rss_held_mib": round(held / MiB, 1),
             "rss_growth_mib": round((held - rss0) / MiB, 1),
             "rss_after_close_mib": round(after / MiB, 1),
             "theoretical_mib_at_20mib_bodies": H2_STREAMS * 20}
    print(f"h2 buffered bodies: {json.dumps(stats)}")
    (tmp_path / "h2_buffered.json").write_text(json.dumps(stats, indent=1))
    good_request(a, "after the connection closed")
    if held - rss0 > H2_FAIR_CAP:
        pytest.xfail(f"agent/net known gap: one HTTP/2 connection pinned "
                     f"{(held - rss0) / MiB:.0f} MiB of buffered bodies ({stats})")
