"""OTLP/HTTP edge cases against a real `dlotel agent` (DESIGN.md section 4), with curl and raw
sockets: status codes and bodies for every error, the size limits at their boundaries (also after
gzip/zstd decompression), chunked bodies, keep-alive, pipelining, h2c and Expect: 100-continue.

All tests share one daemon (the `served` fixture): after each test a good request on a new
connection must still get 200, so no error case may hurt the daemon.
"""

import json
import os
import threading
import time

import pytest

import itlib
from itlib import HTTP_BODY_LIMIT, MiB

with open(os.path.join(itlib.PAYLOADS, "summary.json")) as _f:
    SUMMARY = json.load(_f)

PAYLOAD_SERVICES = {"frontend", "checkout", "inventory"}
PB = "application/x-protobuf"
JS = "application/json"

PAYLOADS = {
    # file: (path, content type, what to count, expected count)
    "traces_512.pb": ("/v1/traces", PB, "spans", SUMMARY["traces"]["spans"]),
    "traces_512.json": ("/v1/traces", JS, "spans", SUMMARY["traces"]["spans"]),
    "logs_512.pb": ("/v1/logs", PB, "logs", SUMMARY["logs"]["records"]),
    "logs_512.json": ("/v1/logs", JS, "logs", SUMMARY["logs"]["records"]),
    "metrics.pb": ("/v1/metrics", PB, "metrics", SUMMARY["metrics"]["metrics"]),
    "metrics.json": ("/v1/metrics", JS, "metrics", SUMMARY["metrics"]["metrics"]),
}


def payload_items(reqs, kind):
    """Items of the shared payload files (their three services) in |reqs|."""
    it = {"spans": itlib.spans_of, "logs": itlib.logs_of, "metrics": itlib.metrics_of}[kind]
    n = 0
    for res, _, _ in it(reqs):
        svc = itlib.attrs(res.get("resource", {}).get("attributes")).get("service.name", {})
        if svc.get("value") in PAYLOAD_SERVICES:
            n += 1
    return n


def expect_items(agent, since, kind, count):
    """Waits until the file exporter wrote |count| more payload items of |kind| after offset
    |since|, then checks that no more than that arrive (each request is written once)."""
    agent.wait_requests(lambda r: payload_items(r, kind) >= count, since=since, timeout=15,
                        what=f"{count} {kind}")
    time.sleep(0.3)
    got = payload_items(agent.requests(since), kind)
    assert got == count, f"expected {count} {kind} in the file exporter output, got {got}"


def assert_ok(status, headers, body, content_type):
    """200 with the empty Export*ServiceResponse in the request's content type."""
    assert status == 200, f"expected 200, got {status} {headers} {body[:300]!r}"
    ct = (headers.get("content-type") or "").split(";")[0].strip().lower()
    want = content_type.split(";")[0].strip().lower()
    assert ct == want, f"response content-type {ct!r}, request was {want!r}"
    if want == PB:
        assert body == b"", f"empty protobuf response expected, got {body[:200]!r}"
    else:
        assert json.loads(body) == {}, f"empty JSON response expected, got {body[:200]!r}"


def post(agent, path, body, content_type=PB, headers=(), extra=()):
    return itlib.curl_post(agent.http_url + path, body, content_type, headers, extra)


def raw_exchange(agent, data, timeout=10.0):
    with itlib.RawConn(agent.http_port, timeout=timeout) as c:
        c.send(data)
        return c.read_response()


# ---------- accepted bodies ----------

@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_files_accepted(served, name):
    path, ct, kind, count = PAYLOADS[name]
    since = served.out_size()
    status, hdrs, body, _ = post(served, path, itlib.payload(name), ct)
    assert_ok(status, hdrs, body, ct)
    expect_items(served, since, kind, count)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compressed_body_accepted(served, encoding):
    raw = itlib.payload("traces_512.pb")
    body = itlib.gzip_bytes(raw) if encoding == "gzip" else itlib.zstd_bytes(raw)
    assert len(body) < len(raw)
    since = served.out_size()
    status, hdrs, rbody, _ = post(served, "/v1/traces", body, PB,
                                  headers=[f"Content-Encoding: {encoding}"])
    assert_ok(status, hdrs, rbody, PB)
    expect_items(served, since, "spans", SUMMARY["traces"]["spans"])


def test_compressed_json_accepted(served):
    body = itlib.gzip_bytes(itlib.payload("logs_512.json"))
    since = served.out_size()
    status, hdrs, rbody, _ = post(served, "/v1/logs", body, JS,
                                  headers=["Content-Encoding: gzip"])
    assert_ok(status, hdrs, rbody, JS)
    expect_items(served, since, "logs", SUMMARY["logs"]["records"])


@pytest.mark.parametrize("ct", ["application/json; charset=utf-8", "application/json;charset=UTF-8",
                                "Application/JSON"])
def test_json_content_type_parameters_accepted(served, ct):
    since = served.out_size()
    status, hdrs, body, _ = post(served, "/v1/metrics", itlib.payload("metrics.json"), ct)
    assert_ok(status, hdrs, body, JS)
    expect_items(served, since, "metrics", SUMMARY["metrics"]["metrics"])


def test_chunked_request_body(served):
    since = served.out_size()
    status, hdrs, body, verbose = post(served, "/v1/traces", itlib.payload("traces_512.pb"), PB,
                                       headers=["Transfer-Encoding: chunked"])
    assert "transfer-encoding: chunked" in verbose.lower(), "curl did not send a chunked body"
    assert_ok(status, hdrs, body, PB)
    expect_items(served, since, "spans", SUMMARY["traces"]["spans"])


def test_chunked_raw_many_small_chunks(served):
    """A chunked body cut into odd sizes, with a chunk extension and a trailer."""
    raw = itlib.payload("logs_512.pb")
    parts = []
    i, step = 0, 1
    while i < len(raw):
        piece = raw[i:i + step]
        ext = b";ext=1" if step == 3 else b""
        parts.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        i += step
        step = step * 7 % 65521 + 1
    data = (b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\nX-Trailer: t\r\n\r\n")
    since = served.out_size()
    r = raw_exchange(served, data)
    assert_ok(r.status, dict(r.headers), r.body, PB)
    expect_items(served, since, "logs", SUMMARY["logs"]["records"])


def test_h2c_prior_knowledge(served):
    since = served.out_size()
    status, hdrs, body, verbose = post(served, "/v1/traces", itlib.payload("traces_512.pb"), PB,
                                       extra=["--http2-prior-knowledge"])
    assert "http_version=2" in verbose, f"not HTTP/2: {verbose[-2000:]}"
    assert_ok(status, hdrs, body, PB)
    expect_items(served, since, "spans", SUMMARY["traces"]["spans"])


def test_h2c_json_and_errors(served):
    status, hdrs, body, verbose = post(served, "/v1/logs", itlib.payload("logs_512.json"), JS,
                                       extra=["--http2-prior-knowledge"])
    assert "http_version=2" in verbose
    assert_ok(status, hdrs, body, JS)
    status, hdrs, body, _ = post(served, "/v1/logs", b"x", "text/plain",
                                 extra=["--http2-prior-knowledge"])
    assert status == 415, (status, hdrs, body)
    status, hdrs, body, _ = post(served, "/v1/nope", b"", PB, extra=["--http2-prior-knowledge"])
    assert status == 404, (status, hdrs, body)
    status, hdrs, body, _ = post(served, "/v1/traces", b"\x0a\xff\xff\xff\xff\x0f", PB,
                                 extra=["--http2-prior-knowledge"])
    assert status == 400, (status, hdrs, body)
    assert itlib.decode_status(body)[0] == 3, body


# ---------- connections ----------

def test_keep_alive_curl(served):
    """curl sends both requests over one connection when the agent keeps it open."""
    url = served.http_url + "/v1/traces"
    body = itlib.trace_request(span_name=b"keepalive")
    with open(os.path.join(served.workdir, "ka.bin"), "wb") as f:
        f.write(body)
    rc, out, err = itlib.curl(["-v", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code}\n",
                               "-H", f"Content-Type: {PB}", "--data-binary",
                               "@" + os.path.join(served.workdir, "ka.bin"), url, url])
    assert rc == 0, err
    assert out.decode().split() == ["200", "200"], out
    assert "re-using existing connection" in err.lower(), f"connection not reused:\n{err[-3000:]}"


def test_keep_alive_raw(served):
    body = itlib.trace_request(span_name=b"keepalive-raw")
    with itlib.RawConn(served.http_port) as c:
        for i in range(3):
            c.send(itlib.http_request("/v1/traces", body))
            r = c.read_response()
            assert r.status == 200, f"request {i} on one connection: {r}"
            assert (r.header("connection") or "").lower() != "close", r


def test_pipelined_requests_answered_in_order(served):
    """Two requests in one write: two 200s, in request order (the second is JSON, so the
    response content types show the order)."""
    a = itlib.http_request("/v1/traces", itlib.payload("traces_512.pb"), PB)
    b = itlib.http_request("/v1/logs", itlib.payload("logs_512.json"), JS)
    since = served.out_size()
    with itlib.RawConn(served.http_port) as c:
        c.send(a + b)
        r1 = c.read_response()
        r2 = c.read_response()
    assert_ok(r1.status, dict(r1.headers), r1.body, PB)
    assert_ok(r2.status, dict(r2.headers), r2.body, JS)
    expect_items(served, since, "spans", SUMMARY["traces"]["spans"])
    expect_items(served, since, "logs", SUMMARY["logs"]["records"])


def test_pipelined_small_requests(served):
    """Ten tiny requests in one write, alternating content types."""
    reqs = []
    for i in range(10):
        if i % 2:
            reqs.append(itlib.http_request("/v1/traces", b'{"resourceSpans":[]}', JS))
        else:
            reqs.append(itlib.http_request("/v1/traces", b"", PB))
    with itlib.RawConn(served.http_port) as c:
        c.send(b"".join(reqs))
        for i in range(10):
            r = c.read_response()
            assert_ok(r.status, dict(r.headers), r.body, JS if i % 2 else PB)


def test_expect_100_continue_curl(served):
    body = itlib.trace_request_of_size(2 * MiB)
    t0 = time.monotonic()
    status, hdrs, rbody, verbose = post(served, "/v1/traces", body, PB,
                                        headers=["Expect: 100-continue"])
    elapsed = time.monotonic() - t0
    assert "expect: 100-continue" in verbose.lower(), "curl did not send Expect"
    assert_ok(status, hdrs, rbody, PB)
    assert "HTTP/1.1 100" in verbose, f"no 100 Continue from the agent:\n{verbose[-3000:]}"
    # curl waits 1 s for a 100 before sending anyway; the agent must not make it wait.
    assert elapsed < 5, elapsed


def test_expect_100_continue_raw(served):
    body = itlib.trace_request_of_size(int(1.5 * MiB))
    head = itlib.http_request("/v1/traces", body, PB, extra=["Expect: 100-continue"])
    head = head[:len(head) - len(body)]
    with itlib.RawConn(served.http_port, timeout=5) as c:
        c.send(head)
        r = c.read_response()
        assert r.status == 100, f"expected 100 Continue before the body, got {r}"
        c.send(body)
        r = c.read_response()
    assert_ok(r.status, dict(r.headers), r.body, PB)


def test_expect_100_continue_too_large_gets_413_first(served):
    """An oversized Content-Length with Expect: the agent refuses without asking for the body."""
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\n"
            f"Content-Length: {HTTP_BODY_LIMIT + 1}\r\nExpect: 100-continue\r\n\r\n").encode()
    with itlib.RawConn(served.http_port, timeout=10) as c:
        c.send(head)
        r = c.read_response()
    assert r.status == 413, r


# ---------- errors ----------

@pytest.mark.parametrize("path", ["/v1/unknown", "/v2/traces", "/", "/v1/traces/extra",
                                  "/v1/trace", "/V1/TRACES", "/v1/traces%00"])
def test_404_unknown_path(served, path):
    r = raw_exchange(served, itlib.http_request(path, itlib.trace_request(), PB))
    assert r.status == 404, f"{path}: {r}"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_405_wrong_method(served, method):
    body = None if method in ("GET", "DELETE") else itlib.trace_request()
    r = raw_exchange(served, itlib.http_request("/v1/traces", body, PB, method=method))
    assert r.status == 405, f"{method}: {r}"
    allow = (r.header("allow") or "").upper()
    assert "POST" in [m.strip() for m in allow.split(",")], f"allow header: {r.headers}"


def test_405_curl_get(served):
    rc, out, err = itlib.curl(["-o", "/dev/null", "-D", "-", served.http_url + "/v1/metrics"])
    assert rc == 0, err
    text = out.decode("latin-1").lower()
    assert text.startswith("http/1.1 405"), text
    assert "allow: post" in text, text


@pytest.mark.parametrize("ct", ["text/plain", "application/octet-stream", "application/protobuf+x",
                                "application/jsonx", "multipart/form-data; boundary=x"])
def test_415_wrong_content_type(served, ct):
    status, hdrs, body, _ = post(served, "/v1/traces", itlib.payload("traces_512.pb"), ct)
    assert status == 415, f"{ct}: {status} {hdrs} {body[:200]!r}"


def test_415_missing_content_type(served):
    r = raw_exchange(served, itlib.http_request("/v1/traces", itlib.trace_request(), None))
    assert r.status == 415, r


@pytest.mark.parametrize("encoding", ["br", "compress", "x-snappy"])
def test_415_unsupported_content_encoding(served, encoding):
    status, hdrs, body, _ = post(served, "/v1/traces", itlib.payload("traces_512.pb"), PB,
                                 headers=[f"Content-Encoding: {encoding}"])
    assert status == 415, f"{encoding}: {status} {hdrs} {body[:200]!r}"


@pytest.mark.parametrize("garbage", [
    b"\x0a\xff\xff\xff\xff\x0f",          # resource_spans with a length past the end
    b"\x0f\x00",                          # wire type 7 does not exist
    b"\x0a\x05\x0a\x03\x0a\x01",          # nested lengths that overrun their parents
    b"\xff" * 64,                         # a varint that never ends
], ids=["length-overrun", "bad-wire-type", "nested-overrun", "endless-varint"])
def test_400_garbage_protobuf_has_status_body(served, garbage):
    status, hdrs, body, _ = post(served, "/v1/traces", garbage, PB)
    assert status == 400, f"{status} {hdrs} {body[:200]!r}"
    assert (hdrs.get("content-type") or "").startswith(PB), hdrs
    code, message = itlib.decode_status(body)
    assert code == 3, f"google.rpc.Status code {code}, want 3 (INVALID_ARGUMENT): {body!r}"
    assert message.strip(), f"google.rpc.Status without a message: {body!r}"


def test_400_garbage_protobuf_gzip(served):
    status, hdrs, body, _ = post(served, "/v1/logs", itlib.gzip_bytes(b"\x0f\x00" * 100), PB,
                                 headers=["Content-Encoding: gzip"])
    assert status == 400, status
    assert itlib.decode_status(body)[0] == 3


def test_400_corrupt_gzip_stream(served):
    good = itlib.gzip_bytes(itlib.payload("traces_512.pb"))
    bad = good[:20] + bytes(b ^ 0x5A for b in good[20:60]) + good[60:]
    status, hdrs, body, _ = post(served, "/v1/traces", bad, PB, headers=["Content-Encoding: gzip"])
    assert status == 400, f"{status} {body[:200]!r}"


@pytest.mark.parametrize("bad", [
    b'{"resourceSpans": [',
    b'not json at all',
    b'{"resourceSpans": 5}',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
    b'\xff\xfe{}',
], ids=["truncated", "not-json", "wrong-type", "bad-trace-id", "bad-utf8"])
def test_400_bad_json_has_json_status_body(served, bad):
    status, hdrs, body, _ = post(served, "/v1/traces", bad, JS)
    assert status == 400, f"{bad!r}: {status} {hdrs} {body[:200]!r}"
    assert (hdrs.get("content-type") or "").startswith(JS), hdrs
    st = json.loads(body)
    assert st.get("code") == 3, f"JSON Status code: {st}"
    assert isinstance(st.get("message"), str) and st["message"].strip(), st


def test_413_content_length_over_limit(served):
    """Refused from the header alone: the agent must not wait for 20 MiB it will not take."""
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\n"
            f"Content-Length: {HTTP_BODY_LIMIT + 1}\r\n\r\n").encode()
    with itlib.RawConn(served.http_port, timeout=10) as c:
        c.send(head + b"\x0a" * 1000)
        r = c.read_response()
    assert r.status == 413, r


def test_413_huge_content_length(served):
    head = (f"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\n"
            f"Content-Length: 18446744073709551615\r\n\r\n").encode()
    with itlib.RawConn(served.http_port, timeout=10) as c:
        c.send(head)
        r = c.read_response()
    assert r.status in (400, 413), r


def _send_streaming(conn, chunks):
    """Sends |chunks| in a thread, tolerating the agent closing the connection early."""
    def run():
        try:
            for ch in chunks:
                conn.send(ch)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_413_chunked_body_over_limit(served):
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"%x\r\n" % MiB + b"\x00" * MiB + b"\r\n"
    with itlib.RawConn(served.http_port, timeout=20) as c:
        c.send(head)
        t = _send_streaming(c, [chunk] * 22 + [b"0\r\n\r\n"])
        r = c.read_response()
        t.join(timeout=20)
    assert r.status == 413, r


def test_body_limit_boundary(served):
    """Exactly 20 MiB is accepted; one byte more is 413."""
    exact = itlib.trace_request_of_size(HTTP_BODY_LIMIT)
    since = served.out_size()
    status, hdrs, body, _ = post(served, "/v1/traces", exact, PB)
    assert_ok(status, hdrs, body, PB)
    served.wait_requests(lambda r: any(sp.get("name", "").startswith("boundary")
                                       for _, _, sp in itlib.spans_of(r)),
                         since=since, timeout=30, what="the 20 MiB span")
    over = itlib.trace_request_of_size(HTTP_BODY_LIMIT + 1)
    with itlib.RawConn(served.http_port, timeout=30) as c:
        t = _send_streaming(c, [itlib.http_request("/v1/traces", over, PB)])
        r = c.read_response()
        t.join(timeout=30)
    assert r.status == 413, r


def test_decompressed_limit_boundary_gzip(served):
    """The 20 MiB limit holds after decompression too, at the exact byte."""
    exact = itlib.gzip_bytes(itlib.trace_request_of_size(HTTP_BODY_LIMIT))
    status, hdrs, body, _ = post(served, "/v1/traces", exact, PB, headers=["Content-Encoding: gzip"])
    assert_ok(status, hdrs, body, PB)
    over = itlib.gzip_bytes(itlib.trace_request_of_size(HTTP_BODY_LIMIT + 1))
    status, hdrs, body, _ = post(served, "/v1/traces", over, PB, headers=["Content-Encoding: gzip"])
    assert status == 413, (status, body[:200])


def test_413_gzip_bomb(served):
    bomb = itlib.gzip_bomb(64 * MiB)
    assert len(bomb) < MiB
    status, hdrs, body, _ = post(served, "/v1/traces", bomb, PB, headers=["Content-Encoding: gzip"])
    assert status == 413, f"gzip bomb of {len(bomb)} bytes: {status} {body[:200]!r}"


def test_413_gzip_bomb_json(served):
    bomb = itlib.gzip_bomb(256 * MiB)
    status, hdrs, body, _ = post(served, "/v1/logs", bomb, JS, headers=["Content-Encoding: gzip"])
    assert status == 413, f"256 MiB gzip bomb: {status} {body[:200]!r}"


def test_413_zstd_bomb_declared_size(served):
    bomb = itlib.zstd_bomb_cli(64 * MiB)
    assert len(bomb) < MiB
    status, hdrs, body, _ = post(served, "/v1/traces", bomb, PB, headers=["Content-Encoding: zstd"])
    assert status == 413, f"zstd bomb of {len(bomb)} bytes: {status} {body[:200]!r}"


def test_413_zstd_bomb_streamed(served):
    """No content size in the frame header: only counting output while inflating catches it."""
    bomb = itlib.zstd_rle_bomb(256 * MiB)
    assert len(bomb) < 16 * 1024
    status, hdrs, body, _ = post(served, "/v1/metrics", bomb, PB,
                                 headers=["Content-Encoding: zstd"])
    assert status == 413, f"zstd RLE bomb: {status} {body[:200]!r}"


def test_many_errors_in_a_row_then_ok(served):
    """A burst of every error kind, each on its own connection, then good data."""
    cases = [
        itlib.http_request("/nope", b"x", PB),
        itlib.http_request("/v1/traces", None, PB, method="GET"),
        itlib.http_request("/v1/traces", b"x", "text/plain"),
        itlib.http_request("/v1/traces", b"x", PB, extra=["Content-Encoding: br"]),
        itlib.http_request("/v1/traces", b"\x0f\x00", PB),
        itlib.http_request("/v1/traces", b"{", JS),
    ]
    for _ in range(5):
        for data in cases:
            r = raw_exchange(served, data)
            assert 400 <= r.status < 500, r
    itlib.assert_serving(served, "after 30 error responses")


def test_malformed_http_does_not_kill_the_agent(served):
    for data in [b"GARBAGE\r\n\r\n", b"POST /v1/traces HTTP/9.9\r\n\r\n",
                 b"POST /v1/traces HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nxxxxx",
                 b"POST /v1/traces HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 3\r\n\r\n0\r\n\r\n",
                 b"\x00" * 100 + b"\r\n\r\n"]:
        with itlib.RawConn(served.http_port, timeout=5) as c:
            c.send(data)
            try:
                r = c.read_response()
                assert 400 <= r.status < 600, f"{data[:40]!r}: {r}"
            except (ConnectionError, OSError):
                pass  # Closing the connection is a fine answer to bytes that are not HTTP.
        served.assert_alive()
