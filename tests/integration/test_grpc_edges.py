"""OTLP/gRPC edge cases against a real `dlotel agent`, with Python grpcio (Debian's 1.51) sending
raw bytes through identity (de)serializers, and curl for what grpcio will not send (a wrong
content-type, an unknown grpc-encoding).

grpc-status codes (DESIGN.md section 4): 0 OK, 3 INVALID_ARGUMENT for a bad payload,
8 RESOURCE_EXHAUSTED over the 4 MiB message limit (also after decompression), 12 UNIMPLEMENTED
for an unknown method or encoding, HTTP 415 for a non-gRPC content-type.
"""

import json
import os
import struct
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import itlib
from itlib import GRPC_MSG_LIMIT, MiB

with open(os.path.join(itlib.PAYLOADS, "summary.json")) as _f:
    SUMMARY = json.load(_f)

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

# The client may send more than the server takes; the point is to see the server refuse it.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 * MiB),
                   ("grpc.max_receive_message_length", 64 * MiB),
                   ("grpc.enable_retries", 0)]


def call(agent, method, body, compression=None, timeout=20):
    """One unary call on a new channel. Returns (response bytes, grpc status code)."""
    with grpc.insecure_channel(agent.grpc_target, options=CHANNEL_OPTIONS,
                               compression=compression) as ch:
        fn = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            resp, c = fn.with_call(body, timeout=timeout)
            return resp, c.code(), c.details()
        except grpc.RpcError as e:
            return None, e.code(), e.details()


def assert_grpc_ok(agent, method, body, compression=None, what=""):
    resp, code, details = call(agent, method, body, compression)
    assert code == grpc.StatusCode.OK, (
        f"{what}: {method} got {code} {details!r}\n{itlib.tail(agent.log_path)}")
    # An empty Export*ServiceResponse (no partial_success) serializes to zero bytes.
    assert resp == b"", f"{what}: response {resp[:100]!r}"


def assert_grpc_serving(agent, what):
    agent.assert_alive()
    assert_grpc_ok(agent, TRACES, itlib.trace_request(span_name=b"still-serving-grpc"), what=what)
    itlib.assert_serving(agent, what)


@pytest.fixture
def gserved(shared_agent):
    shared_agent.assert_alive()
    yield shared_agent
    assert_grpc_serving(shared_agent, "after this test's calls")


def payload_items(reqs, kind):
    it = {"spans": itlib.spans_of, "logs": itlib.logs_of, "metrics": itlib.metrics_of}[kind]
    n = 0
    for res, _, _ in it(reqs):
        svc = itlib.attrs(res.get("resource", {}).get("attributes")).get("service.name", {})
        if svc.get("value") in ("frontend", "checkout", "inventory"):
            n += 1
    return n


def expect_items(agent, since, kind, count):
    agent.wait_requests(lambda r: payload_items(r, kind) >= count, since=since, timeout=15,
                        what=f"{count} {kind}")
    time.sleep(0.3)
    got = payload_items(agent.requests(since), kind)
    assert got == count, f"expected {count} {kind}, the file exporter has {got}"


PAYLOADS = [
    (TRACES, "traces_512.pb", "spans", SUMMARY["traces"]["spans"]),
    (LOGS, "logs_512.pb", "logs", SUMMARY["logs"]["records"]),
    (METRICS, "metrics.pb", "metrics", SUMMARY["metrics"]["metrics"]),
]


@pytest.mark.parametrize("method,name,kind,count", PAYLOADS, ids=[p[1] for p in PAYLOADS])
@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip], ids=["identity", "gzip"])
def test_export_accepts_payloads(gserved, method, name, kind, count, compression):
    since = gserved.out_size()
    assert_grpc_ok(gserved, method, itlib.payload(name), compression, what=name)
    expect_items(gserved, since, kind, count)


def test_empty_request_ok(gserved):
    for m in (TRACES, METRICS, LOGS):
        assert_grpc_ok(gserved, m, b"", what="empty request")


@pytest.mark.parametrize("method", [TRACES, METRICS, LOGS])
@pytest.mark.parametrize("garbage", [b"\x0a\xff\xff\xff\xff\x0f", b"\x0f\x00", b"\xff" * 32],
                         ids=["length-overrun", "bad-wire-type", "endless-varint"])
def test_garbage_is_invalid_argument(gserved, method, garbage):
    resp, code, details = call(gserved, method, garbage)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, details)
    assert details, "INVALID_ARGUMENT without a message"


def test_message_limit_boundary(gserved):
    """Exactly 4 MiB is within the limit; one byte more is RESOURCE_EXHAUSTED."""
    exact = itlib.trace_request_of_size(GRPC_MSG_LIMIT)
    since = gserved.out_size()
    assert_grpc_ok(gserved, TRACES, exact, what="a message of exactly 4 MiB")
    gserved.wait_requests(lambda r: any(sp.get("name", "").startswith("boundary")
                                        for _, _, sp in itlib.spans_of(r)),
                          since=since, timeout=20, what="the 4 MiB span")
    over = itlib.trace_request_of_size(GRPC_MSG_LIMIT + 1)
    resp, code, details = call(gserved, TRACES, over)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)


def test_message_limit_after_decompression(gserved):
    """A gzip-compressed message is small on the wire; the limit applies to its inflated size."""
    exact = itlib.trace_request_of_size(GRPC_MSG_LIMIT)
    assert_grpc_ok(gserved, TRACES, exact, grpc.Compression.Gzip, what="4 MiB gzip")
    over = itlib.trace_request_of_size(GRPC_MSG_LIMIT + 1)
    resp, code, details = call(gserved, TRACES, over, grpc.Compression.Gzip)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)


def test_far_over_limit(gserved):
    resp, code, details = call(gserved, LOGS, b"\x0a" + itlib.varint(16 * MiB) + b"\0" * (16 * MiB))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)


@pytest.mark.parametrize("method", [
    "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
    "/opentelemetry.proto.collector.trace.v1.TraceServic/Export",
    "/foo.Bar/Export",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export/extra",
    "/opentelemetry.proto.collector.trace.v1.TraceService/export",
])
def test_unknown_method_unimplemented(gserved, method):
    resp, code, details = call(gserved, method, itlib.trace_request())
    assert code == grpc.StatusCode.UNIMPLEMENTED, (method, code, details)


def test_concurrent_calls_on_one_channel(gserved):
    """HTTP/2 multiplexing: many calls in flight at once on one connection all succeed."""
    body = itlib.payload("logs_512.pb")
    since = gserved.out_size()
    with grpc.insecure_channel(gserved.grpc_target, options=CHANNEL_OPTIONS) as ch:
        fn = ch.unary_unary(LOGS, request_serializer=None, response_deserializer=None)
        futures = [fn.future(body, timeout=30) for _ in range(32)]
        for f in futures:
            assert f.result() == b""
    expect_items(gserved, since, "logs", 32 * SUMMARY["logs"]["records"])


def test_mixed_good_and_bad_calls_on_one_channel(gserved):
    """An error on one stream does not break the connection for the streams after it."""
    good = itlib.trace_request(span_name=b"mixed")
    with grpc.insecure_channel(gserved.grpc_target, options=CHANNEL_OPTIONS) as ch:
        fn = ch.unary_unary(TRACES, request_serializer=None, response_deserializer=None)
        bad = ch.unary_unary("/nope.Nope/Export", request_serializer=None,
                             response_deserializer=None)
        big = itlib.trace_request_of_size(GRPC_MSG_LIMIT + 1)
        for i in range(3):
            assert fn(good, timeout=10) == b""
            with pytest.raises(grpc.RpcError) as e:
                fn(b"\x0f\x00", timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as e:
                bad(good, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.RpcError) as e:
                fn(big, timeout=20)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert fn(good, timeout=10) == b""


def test_many_channels_in_parallel(gserved):
    body = itlib.payload("metrics.pb")
    since = gserved.out_size()
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: call(gserved, METRICS, body)[1], range(16)))
    assert all(c == grpc.StatusCode.OK for c in results), results
    expect_items(gserved, since, "metrics", 16 * SUMMARY["metrics"]["metrics"])


# ---------- what grpcio will not send: curl over h2c ----------

def grpc_frame(msg, compressed=False):
    return struct.pack(">BI", 1 if compressed else 0, len(msg)) + msg


def curl_grpc(agent, path, body, headers):
    """POSTs over h2c with curl; returns (HTTP status, headers and trailers dict)."""
    with tempfile.TemporaryDirectory() as d:
        bpath = os.path.join(d, "body")
        hpath = os.path.join(d, "hdrs")
        with open(bpath, "wb") as f:
            f.write(body)
        args = ["--http2-prior-knowledge", "-o", os.path.join(d, "out"), "-D", hpath,
                "-w", "%{http_code}", "--data-binary", "@" + bpath]
        for h in headers:
            args += ["-H", h]
        rc, out, err = itlib.curl(args + [f"http://{agent.grpc_target}{path}"])
        assert rc == 0, err
        with open(hpath, "rb") as f:
            return int(out.decode()), itlib.parse_header_dump(f.read())


def test_curl_grpc_identity_ok(gserved):
    """A hand-framed gRPC call through curl: the agent speaks plain HTTP/2 gRPC, not just
    whatever grpcio happens to send."""
    status, hdrs = curl_grpc(gserved, TRACES, grpc_frame(itlib.trace_request()),
                             ["Content-Type: application/grpc", "TE: trailers"])
    assert status == 200, (status, hdrs)
    assert hdrs.get("grpc-status") == "0", hdrs


def test_non_grpc_content_type_is_415(gserved):
    for ct in ["text/plain", "application/json", "application/grpc-web"]:
        status, hdrs = curl_grpc(gserved, TRACES, grpc_frame(itlib.trace_request()),
                                 [f"Content-Type: {ct}", "TE: trailers"])
        assert status == 415, (ct, status, hdrs)


def test_grpc_content_type_with_suffix_ok(gserved):
    status, hdrs = curl_grpc(gserved, TRACES, grpc_frame(itlib.trace_request()),
                             ["Content-Type: application/grpc+proto", "TE: trailers"])
    assert status == 200 and hdrs.get("grpc-status") == "0", (status, hdrs)


def test_unsupported_grpc_encoding_unimplemented(gserved):
    status, hdrs = curl_grpc(gserved, TRACES, grpc_frame(b"\x00\x01\x02", compressed=True),
                             ["Content-Type: application/grpc", "TE: trailers",
                              "grpc-encoding: snappy"])
    assert status == 200, (status, hdrs)
    assert hdrs.get("grpc-status") == "12", f"want UNIMPLEMENTED for grpc-encoding snappy: {hdrs}"


def test_truncated_grpc_frame(gserved):
    """A frame header that promises more bytes than the stream carries is an error, not a hang."""
    body = struct.pack(">BI", 0, 1000) + b"\x0a\x00"
    status, hdrs = curl_grpc(gserved, TRACES, body,
                             ["Content-Type: application/grpc", "TE: trailers"])
    assert status == 200, (status, hdrs)
    assert hdrs.get("grpc-status") not in (None, "0"), hdrs
