"""The hostile-input matrix (issue 8): one test per attack, against one real `dlotel agent`.

Every case asserts three things:
  1. the documented answer (docs/otlp.md: HTTP status and google.rpc.Status code, gRPC status,
     or for transport attacks the connection being closed / the HTTP/2 GOAWAY or RST_STREAM code);
  2. the daemon keeps serving another client afterwards (a good OTLP/HTTP request on a new
     connection, and for the HTTP/2 and gRPC cases a good gRPC call too);
  3. its resident memory stays bounded: VmRSS after the case is under the baseline (taken after a
     warm-up that grew the per-request buffers once) plus RSS_HEADROOM.

The daemon is shared by the whole module on purpose: it has to survive every case in turn. The
slowloris cases need the 60 s idle timeout to pass, so they start at module set-up in a thread
and are checked by the last tests of the module.

Written at the end: <module tmp>/hostile_report.json with each case's RSS after it and the
daemon's peak (VmHWM).
"""

import json
import os
import socket
import struct
import threading
import time
import zlib

import grpc
import pytest

import h2raw
import itlib
from itlib import MiB, RawConn, http_request

PB = "application/x-protobuf"
JS = "application/json"
TRACES_GRPC = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# What one request may legitimately hold at once: the 20 MiB body, the inflated copy, the
# converted copy, and the JSON arena (capped at 256 MiB in agent/receiver/receiver.c). ASan's
# quarantine and redzones add to it; the figure only has to catch unbounded growth.
RSS_HEADROOM = 400 * MiB


def sanitized():
    """True for an AddressSanitizer build of the daemon, whose freed memory sits in ASan's
    quarantine (256 MiB by default) instead of going back: RSS then stays near its peak."""
    path = os.environ.get("DLOTEL_BIN")
    if not path or not os.path.exists(path):
        return False
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


if sanitized():
    RSS_HEADROOM += 512 * MiB
IDLE_TIMEOUT = 60.0  # docs/otlp.md

CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 * MiB),
                   ("grpc.max_receive_message_length", 64 * MiB),
                   ("grpc.enable_retries", 0)]

STATE = {"baseline": None, "rss": {}, "answers": {}}


def answer(name, value):
    """Records what the daemon answered a case whose assertion allows more than one answer, for
    the report at the end of the module."""
    STATE["answers"][name] = value


# ---------- fixtures and checks ----------

def rss_bytes(agent, field="VmRSS"):
    with open(f"/proc/{agent.proc.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{agent.proc.pid}/status")


class Slowloris(threading.Thread):
    """A client that sends its request one byte every |every| seconds (never finishing), and
    records when the daemon closed the connection."""

    def __init__(self, port, data, every=5.0, prefix=b""):
        super().__init__(daemon=True)
        self.port, self.data, self.every, self.prefix = port, data, every, prefix
        self.started = time.monotonic()
        self.closed_after = None
        self.answer = b""
        self.sent = 0
        self.stop = threading.Event()

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.settimeout(self.every)
        try:
            s.sendall(self.prefix)
            for i in range(len(self.data)):
                if self.stop.is_set():
                    return
                try:
                    s.sendall(self.data[i:i + 1])
                    self.sent += 1
                except OSError:
                    self.closed_after = time.monotonic() - self.started
                    return
                try:
                    d = s.recv(4096)
                    if d == b"" or d:
                        # EOF, or a response (408/400) then EOF: either way the daemon ended it.
                        self.closed_after = time.monotonic() - self.started
                        self.answer = d
                        return
                except socket.timeout:
                    pass
                except OSError:
                    self.closed_after = time.monotonic() - self.started
                    return
        finally:
            s.close()


@pytest.fixture(scope="module")
def hagent(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    a = itlib.Agent(d).start()
    # Warm-up: the receivers' kept buffers (up to 4 MiB) and the allocator's arenas grow once.
    for _ in range(3):
        with RawConn(a.http_port) as c:
            c.send(http_request("/v1/traces", itlib.trace_request_of_size(3 * MiB)))
            assert c.read_response().status == 200
    STATE["baseline"] = rss_bytes(a)
    # Slowloris clients run while the other cases do; the last tests check them.
    head = http_request("/v1/traces", itlib.trace_request())
    STATE["slow_headers"] = Slowloris(a.http_port, head)
    # The slow body: the head at once (declaring a 1000-byte body), then a byte every 5 s.
    slow_head = http_request("/v1/traces", b"\x0a" * 1000)
    STATE["slow_body"] = Slowloris(a.http_port, b"\x0a" * 1000,
                                   prefix=slow_head[:slow_head.index(b"\r\n\r\n") + 4])
    STATE["slow_h2"] = Slowloris(a.grpc_port, h2raw.PREFACE + h2raw.frame(h2raw.SETTINGS, 0, 0))
    for k in ("slow_headers", "slow_body", "slow_h2"):
        STATE[k].start()
    try:
        yield a
    finally:
        for k in ("slow_headers", "slow_body", "slow_h2"):
            STATE[k].stop.set()
        report = {"baseline_rss": STATE["baseline"], "rss_after": STATE["rss"],
                  "answers": STATE["answers"],
                  "slowloris_closed_after_s": {k: STATE[k].closed_after for k in
                                               ("slow_headers", "slow_body", "slow_h2")}}
        if a.alive():
            report["peak_rss_vmhwm"] = rss_bytes(a, "VmHWM")
        with open(os.path.join(str(d), "hostile_report.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(f"\nhostile: baseline RSS {STATE['baseline'] / MiB:.1f} MiB, "
              f"max after a case {max(STATE['rss'].values(), default=0) / MiB:.1f} MiB, "
              f"peak {report.get('peak_rss_vmhwm', 0) / MiB:.1f} MiB; answers "
              f"{json.dumps(STATE['answers'])}")
        if a.alive():
            a.stop()
        else:
            pytest.fail(f"dlotel agent died during the hostile matrix (exit "
                        f"{a.proc.returncode}):\n{itlib.tail(a.log_path)}")


@pytest.fixture
def h(hagent, request):
    """The shared daemon; after the case: still serving (HTTP and gRPC), RSS bounded."""
    hagent.assert_alive()
    yield hagent
    itlib.assert_serving(hagent, f"after {request.node.name}")
    resp, code, details = grpc_call(hagent, itlib.trace_request(span_name=b"still-serving-grpc"))
    assert code == grpc.StatusCode.OK, f"after {request.node.name}: gRPC got {code} {details}"
    rss = rss_bytes(hagent)
    STATE["rss"][request.node.name] = rss
    assert rss < STATE["baseline"] + RSS_HEADROOM, (
        f"after {request.node.name}: RSS {rss / MiB:.0f} MiB, baseline "
        f"{STATE['baseline'] / MiB:.0f} MiB")


def post(agent, body, path="/v1/traces", ctype=PB, extra=(), timeout=30.0):
    with RawConn(agent.http_port, timeout=timeout) as c:
        c.send(http_request(path, body, ctype, extra=extra))
        return c.read_response()


def assert_invalid(r, ctype=PB, what=""):
    """400 with a google.rpc.Status of code 3 in the request's content type."""
    assert r.status == 400, f"{what}: want 400, got {r}"
    if ctype == PB:
        code, message = itlib.decode_status(r.body)
    else:
        st = json.loads(r.body)
        code, message = st.get("code"), st.get("message")
    assert code == 3, f"{what}: want INVALID_ARGUMENT (3), got {code} {message!r}"
    assert message, f"{what}: the status should say what is wrong"
    return message


def assert_status(r, status, what=""):
    assert r.status == status, f"{what}: want {status}, got {r}"
    if r.body:
        itlib.decode_status(r.body)  # A google.rpc.Status, decodable.


def grpc_call(agent, body, compression=None, timeout=20):
    with grpc.insecure_channel(agent.grpc_target, options=CHANNEL_OPTIONS,
                               compression=compression) as ch:
        fn = ch.unary_unary(TRACES_GRPC, request_serializer=None, response_deserializer=None)
        try:
            resp, c = fn.with_call(body, timeout=timeout)
            return resp, c.code(), c.details()
        except grpc.RpcError as e:
            return None, e.code(), e.details()


def grpc_frame(msg, compressed=False, length=None):
    return struct.pack(">BI", 1 if compressed else 0,
                       len(msg) if length is None else length) + msg


def curl_grpc(agent, body, headers=()):
    """A hand-framed gRPC call through curl; returns (HTTP status, headers and trailers)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        bpath = os.path.join(d, "body")
        hpath = os.path.join(d, "hdrs")
        with open(bpath, "wb") as f:
            f.write(body)
        args = ["--http2-prior-knowledge", "-o", os.path.join(d, "out"), "-D", hpath,
                "-w", "%{http_code}", "--data-binary", "@" + bpath,
                "-H", "Content-Type: application/grpc", "-H", "TE: trailers"]
        for x in headers:
            args += ["-H", x]
        rc, out, err = itlib.curl(args + [f"http://{agent.grpc_target}{TRACES_GRPC}"])
        assert rc == 0, err
        with open(hpath, "rb") as f:
            return int(out.decode()), itlib.parse_header_dump(f.read())


# ---------- protobuf builders ----------

fb, fv, varint = itlib.field_bytes, itlib.field_varint, itlib.varint


def wrap_span(span):
    """An ExportTraceServiceRequest holding |span| (raw Span bytes) in one resource and scope."""
    return fb(1, fb(2, fb(2, span)))


def span_with(*fields):
    return wrap_span(fb(1, b"\x01" * 16) + fb(2, b"\x02" * 8) + b"".join(fields))


def nested_kvlist(depth, leaf=b"x"):
    """An AnyValue nested |depth| kvlists deep: AnyValue{kvlist_value: KeyValueList{values:
    KeyValue{key, value: AnyValue{...}}}}."""
    v = fb(1, leaf)  # AnyValue{string_value}
    for _ in range(depth):
        v = fb(6, fb(1, fb(1, b"k") + fb(2, v)))
    return v


def nested_array(depth):
    v = fb(1, b"x")
    for _ in range(depth):
        v = fb(5, fb(1, v))  # AnyValue{array_value: ArrayValue{values: AnyValue}}
    return v


def span_attr(value_anyvalue, key=b"a"):
    return span_with(fb(5, b"s"), fb(9, fb(1, key) + fb(2, value_anyvalue)))


# ---------- 1. protobuf: varints, lengths, wire types ----------

PB_INVALID = {
    "truncated_varint_tag": b"\x80",
    "truncated_varint_length": b"\x0a\xff\xff",
    "truncated_varint_value": span_with(b"\x30\x80\x80"),
    "overlong_varint_11_bytes": span_with(b"\x30" + b"\xff" * 10 + b"\x01"),
    "overlong_tag_6_bytes": b"\x8a\x80\x80\x80\x80\x00" + b"\x00",
    "length_past_end": b"\x0a\x10abc",
    "length_2_pow_63": b"\x0a" + varint(1 << 63) + b"x",
    "length_minus_one": b"\x0a" + b"\xff" * 9 + b"\x01",
    "nested_length_past_parent": fb(1, b"\x12\x7f" + b"\x00" * 10),
    "wire_type_varint_for_message": b"\x08\x01",
    "wire_type_fixed32_for_message": b"\x0d\x00\x00\x00\x00",
    "wire_type_start_group": b"\x0b",
    "wire_type_end_group": b"\x0c",
    "wire_type_6": b"\x0e\x00",
    "wire_type_7": b"\x0f\x00",
    "field_number_zero": b"\x02\x00",
    "wrong_wire_type_deep_start_time": span_with(fb(7, b"12345678")),
    "wrong_wire_type_deep_name": span_with(fv(5, 1)),
    "trace_id_15_bytes": wrap_span(fb(1, b"\x01" * 15) + fb(2, b"\x02" * 8)),
    "trace_id_17_bytes": wrap_span(fb(1, b"\x01" * 17) + fb(2, b"\x02" * 8)),
    "span_id_9_bytes": wrap_span(fb(1, b"\x01" * 16) + fb(2, b"\x02" * 9)),
    "unknown_field_length_past_end": span_with(b"\xfa\x07\x20abc"),
    "attribute_value_twice": span_with(fb(9, fb(1, b"k") + fb(2, fb(1, b"a")) +
                                          fb(2, fb(1, b"b")))),
    "deep_nesting_33_kvlists": span_attr(nested_kvlist(33)),
    "deep_nesting_10000_arrays": span_attr(nested_array(10000)),
    "invalid_utf8_byte_ff": span_with(fb(5, b"bad\xff")),
    "invalid_utf8_overlong_nul": span_with(fb(5, b"\xc0\x80")),
    "invalid_utf8_surrogate": span_with(fb(5, b"\xed\xa0\x80")),
    "invalid_utf8_truncated_sequence": span_with(fb(5, b"euro\xe2\x82")),
    "invalid_utf8_above_u10ffff": span_with(fb(5, b"\xf4\x90\x80\x80")),
    "invalid_utf8_attribute_key": span_with(fb(9, fb(1, b"k\x80") + fb(2, fb(1, b"v")))),
    "invalid_utf8_resource_attribute": fb(1, fb(1, fb(1, fb(1, b"service.name") +
                                                      fb(2, fb(1, b"\xfe\xfe"))))),
}


@pytest.mark.parametrize("case", sorted(PB_INVALID))
def test_protobuf_invalid(h, case):
    msg = assert_invalid(post(h, PB_INVALID[case]), PB, case)
    assert len(msg) < 4096, msg


def test_protobuf_nesting_at_the_limit_accepted(h):
    """The other side of the depth boundary: the deepest kvlist nesting the scanner takes. The
    request itself is 4 messages deep before the attribute, an AnyValue->KeyValueList->KeyValue
    step is 3, so the deepest is found by probing down from 32 and must be within a step of the
    32-frame stack (OTLP_MAX_DEPTH)."""
    ok = [d for d in range(0, 12) if post(h, span_attr(nested_kvlist(d))).status == 200]
    deepest = max(ok)
    assert ok == list(range(0, deepest + 1)), ok
    assert post(h, span_attr(nested_kvlist(deepest + 1))).status == 400
    # 4 frames for request/resource_spans/scope_spans/span, then the KeyValue, then 2 frames
    # (AnyValue, KeyValueList, KeyValue: 3 messages) per level, bounded by 32.
    assert 8 <= deepest <= 14, deepest


def test_protobuf_varint_over_64_bits_truncated(h):
    """A 10-byte varint with bits past the 64th: protobuf parsers (C++, upb, protobuf-c) keep the
    low 64 bits, so the scanner accepts it too, as long as it is at most 10 bytes: 200."""
    r = post(h, span_with(b"\x30" + b"\xff" * 9 + b"\x7f"))
    assert r.status == 200, r


def test_protobuf_unknown_fields_skipped(h):
    """Unknown fields of every valid wire type are skipped, as protobuf requires: 200."""
    body = span_with(fv(900, 7), itlib.field_fixed64(901, 1), fb(902, b"zzz"),
                     varint(903 << 3 | 5) + b"\x00\x00\x00\x00")
    r = post(h, body)
    assert r.status == 200 and r.body == b"", r


# ---------- 2. huge repeated fields (valid; must be accepted without blowing up) ----------

def test_huge_repeated_empty_spans(h):
    """400k empty spans (2 bytes each) in one 800 KB request: valid protobuf, so 200."""
    body = fb(1, fb(2, b"\x12\x00" * 400_000))
    r = post(h, body, timeout=120)
    assert r.status == 200, r


def test_huge_repeated_attributes(h):
    """300k attributes on one span."""
    kv = fb(9, fb(1, b"k") + fb(2, fb(1, b"v")))
    r = post(h, span_with(fb(5, b"s"), kv * 300_000), timeout=120)
    assert r.status == 200, r


def test_huge_repeated_resources(h):
    """200k ResourceSpans, each with one empty scope."""
    r = post(h, fb(1, fb(2, b"")) * 200_000, timeout=120)
    assert r.status == 200, r


def test_huge_repeated_json_spans(h):
    """The same in OTLP/JSON: 100k spans, through the JSON decoder and its arena."""
    span = '{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x"}'
    body = ('{"resourceSpans":[{"scopeSpans":[{"spans":[' + ",".join([span] * 100_000) +
            ']}]}]}').encode()
    r = post(h, body, ctype=JS, timeout=120)
    assert r.status == 200, r


# ---------- 3. compression bombs and broken streams ----------

def test_gzip_bomb_1gib(h):
    r = post(h, itlib.gzip_bomb(1024 * MiB), extra=["Content-Encoding: gzip"], timeout=120)
    assert_status(r, 413, "1 GiB gzip bomb")


def test_gzip_bomb_concatenated_members(h):
    """Many gzip members, each under the limit, that add up past it."""
    member = itlib.gzip_bomb(8 * MiB)
    r = post(h, member * 4, extra=["Content-Encoding: gzip"], timeout=120)
    assert_status(r, 413, "4 x 8 MiB gzip members")


def test_gzip_of_gzip(h):
    """A gzip inside a gzip: the inner one is not protobuf, so 400 (one layer is inflated)."""
    inner = itlib.gzip_bytes(itlib.trace_request())
    assert_invalid(post(h, itlib.gzip_bytes(inner), extra=["Content-Encoding: gzip"]))


def test_gzip_truncated(h):
    z = itlib.gzip_bytes(itlib.trace_request())
    assert_invalid(post(h, z[:len(z) // 2], extra=["Content-Encoding: gzip"]))


def test_gzip_bad_crc(h):
    z = bytearray(itlib.gzip_bytes(itlib.trace_request()))
    z[-8] ^= 0xFF
    assert_invalid(post(h, bytes(z), extra=["Content-Encoding: gzip"]))


def test_zstd_bomb_rle_1gib(h):
    r = post(h, itlib.zstd_rle_bomb(1024 * MiB), extra=["Content-Encoding: zstd"], timeout=120)
    assert_status(r, 413, "1 GiB zstd RLE bomb")


def test_zstd_declared_content_size_huge(h):
    """A frame header claiming 2^40 bytes of content (and holding a few): refused without
    allocating what it claims."""
    frame = bytearray(struct.pack("<I", 0xFD2FB528))
    frame.append(0xC0)  # FCS 8 bytes, not single segment.
    frame.append((17 - 10) << 3)
    frame += struct.pack("<Q", 1 << 40)
    frame += struct.pack("<I", (16 << 3) | 1)[:3] + b"\0"  # One raw block, last, 16 bytes?
    frame += b"x" * 16
    r = post(h, bytes(frame), extra=["Content-Encoding: zstd"])
    answer("zstd_declared_2^40", r.status)
    assert r.status in (400, 413), r
    itlib.decode_status(r.body)


def test_zstd_garbage(h):
    assert_invalid(post(h, b"\x28\xb5\x2f\xfd" + os.urandom(64), extra=["Content-Encoding: zstd"]))


def test_grpc_gzip_bomb(h):
    resp, code, details = grpc_call(h, b"\0" * (64 * MiB), compression=grpc.Compression.Gzip,
                                    timeout=60)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)


# ---------- 4. OTLP/JSON ----------

JSON_INVALID = {
    "truncated": b'{"resourceSpans":[',
    "trailing_garbage": b'{"resourceSpans":[]} x',
    "deep_nesting_100k": b"[" * 100_000 + b"]" * 100_000,
    "deep_nesting_objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "invalid_utf8_in_string": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"\xff\xfe"}]}]}]}',
    "lone_surrogate_escape": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"\\ud800"}]}]}]}',
    "wrong_type_resource_spans": b'{"resourceSpans":"x"}',
    "trace_id_not_hex": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz'
                        + b"0" * 30 + b'"}]}]}]}',
    "trace_id_wrong_length": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102"}]}]}]}',
    "int_value_overflow": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":'
                          b'"999999999999999999999999"}]}]}]}',
    "number_1e999999": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":1e999999}]}]}]}',
    "top_level_array": b"[]",
    "empty_body": b"",
    "nul_bytes": b"\x00" * 64,
}


@pytest.mark.parametrize("case", sorted(JSON_INVALID))
def test_json_invalid(h, case):
    assert_invalid(post(h, JSON_INVALID[case], ctype=JS), JS, case)


# ---------- 5. HTTP/1.1 framing ----------

def raw(agent, data, timeout=10.0):
    """Sends |data| on a new connection; returns (first response or None, closed afterwards)."""
    with RawConn(agent.http_port, timeout=timeout) as c:
        c.send(data)
        try:
            r = c.read_response()
        except (ConnectionError, OSError):
            return None, True
        return r, c.closed_by_peer(timeout=3.0)


def head(lines):
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_header_oversized_single(h):
    r, closed = raw(h, http_request("/v1/traces", itlib.trace_request(),
                                    extra=["X-Big: " + "a" * (65 * 1024)]))
    assert r is not None and r.status == 431, r
    assert closed


def test_header_block_at_limit_accepted(h):
    """The other side: headers summing to just under 64 KiB are fine."""
    extra = [f"X-F{i}: " + "a" * 1000 for i in range(60)]
    r, _ = raw(h, http_request("/v1/traces", itlib.trace_request(), extra=extra))
    assert r is not None and r.status == 200, r


def test_header_flood_101(h):
    """101 headers on top of the 3 http_request adds: over the 100-header limit."""
    extra = [f"X-H{i}: v" for i in range(101)]
    r, closed = raw(h, http_request("/v1/traces", itlib.trace_request(), extra=extra))
    assert r is not None and r.status == 431, r
    assert closed


def test_header_count_at_limit_accepted(h):
    """Host, Content-Type, Content-Length and 97 more: exactly 100 headers, accepted."""
    extra = [f"X-H{i}: v" for i in range(97)]
    r, _ = raw(h, http_request("/v1/traces", itlib.trace_request(), extra=extra))
    assert r is not None and r.status == 200, r


def test_header_flood_100k_tiny(h):
    """A client that streams headers forever: cut off at the limit, not buffered."""
    data = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 100_000 + b"\r\n"
    r, closed = raw(h, data, timeout=30)
    answer("header_flood_100k", r.status if r else "closed")
    assert r is None or r.status == 431, r
    assert closed


def test_url_100kib(h):
    r, closed = raw(h, head(["POST /v1/traces?" + "q" * (100 * 1024) + " HTTP/1.1", "Host: x",
                             "Content-Length: 0"]))
    answer("url_100kib", r.status if r else "closed")
    assert r is None or r.status in (414, 431, 400), r
    assert closed


def test_smuggling_cl_and_te(h):
    """Content-Length and Transfer-Encoding together (RFC 9112 6.1): refused and the connection
    closed, so the bytes after the chunked body can never be read as a second request."""
    smuggled = http_request("/v1/traces", itlib.trace_request(span_name=b"smuggled"))
    data = head(["POST /v1/traces HTTP/1.1", "Host: x", "Content-Type: application/x-protobuf",
                 f"Content-Length: {len(smuggled) + 5}", "Transfer-Encoding: chunked"]) + \
        b"0\r\n\r\n" + smuggled
    with RawConn(h.http_port, timeout=10) as c:
        c.send(data)
        r = c.read_response()
        assert r.status == 400, r
        assert c.closed_by_peer(timeout=3.0), "connection left open after a CL+TE request"
        assert c.buf == b"", f"a second response followed: {c.buf[:200]!r}"


def test_smuggling_te_cl(h):
    """TE.CL order reversed, with the smuggled request inside the 'chunk'."""
    smuggled = http_request("/v1/traces", itlib.trace_request(span_name=b"smuggled"))
    chunk = b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"
    data = head(["POST /v1/traces HTTP/1.1", "Host: x", "Content-Type: application/x-protobuf",
                 "Transfer-Encoding: chunked", "Content-Length: 4"]) + chunk
    r, closed = raw(h, data)
    assert r is not None and r.status == 400, r
    assert closed


def test_smuggling_duplicate_content_length(h):
    r, closed = raw(h, head(["POST /v1/traces HTTP/1.1", "Host: x", "Content-Length: 5",
                             "Content-Length: 50"]) + b"x" * 5)
    assert r is not None and r.status == 400, r
    assert closed


def test_smuggling_te_obfuscated(h):
    """Transfer-Encoding: xchunked is not chunked; with no length the request cannot be framed."""
    r, closed = raw(h, head(["POST /v1/traces HTTP/1.1", "Host: x",
                             "Transfer-Encoding: xchunked"]) + b"0\r\n\r\n")
    answer("te_xchunked", r.status if r else "closed")
    assert r is not None and r.status in (400, 501), r
    assert closed


def test_smuggling_te_chunked_not_last(h):
    r, closed = raw(h, head(["POST /v1/traces HTTP/1.1", "Host: x",
                             "Transfer-Encoding: chunked, identity"]) + b"0\r\n\r\n")
    answer("te_chunked_identity", r.status if r else "closed")
    assert r is not None and r.status in (400, 501), r
    assert closed


def test_content_length_negative(h):
    r, closed = raw(h, head(["POST /v1/traces HTTP/1.1", "Host: x", "Content-Length: -1"]))
    assert r is not None and r.status == 400, r
    assert closed


def test_content_length_overflow(h):
    r, closed = raw(h, head(["POST /v1/traces HTTP/1.1", "Host: x",
                             "Content-Length: 99999999999999999999999"]))
    answer("cl_overflow", r.status if r else "closed")
    assert r is not None and r.status in (400, 413), r
    assert closed


def test_chunk_size_overflow(h):
    r, closed = raw(h, head(["POST /v1/traces HTTP/1.1", "Host: x", "Content-Type: " + PB,
                             "Transfer-Encoding: chunked"]) + b"fffffffffffffffff1\r\nx")
    answer("chunk_size_overflow", r.status if r else "closed")
    assert r is not None and r.status in (400, 413), r
    assert closed


def test_obs_fold_header(h):
    """An obs-fold line that looks like a Transfer-Encoding header. RFC 9112 5.2 lets a server
    reject the request (400) or read the fold as spaces; either way the folded text must not
    become a header of its own, so the body stays framed by Content-Length and the next request
    on the connection is read from the right byte."""
    body = itlib.trace_request(span_name=b"folded")
    data = head(["POST /v1/traces HTTP/1.1", "Host: x", "Content-Type: " + PB,
                 f"Content-Length: {len(body)}", "X-Folded: a", " Transfer-Encoding: chunked"])
    with RawConn(h.http_port, timeout=10) as c:
        c.send(data + body + http_request("/v1/traces", itlib.trace_request()))
        r = c.read_response()
        answer("obs_fold", r.status)
        assert r.status in (200, 400), r
        if r.status == 400:
            assert c.closed_by_peer(timeout=3.0)
        else:
            assert c.read_response().status == 200


def test_pipeline_flood_unread(h):
    """2000 pipelined requests sent without reading a byte: the daemon stops reading while its
    answers are unread (bounded output), then answers every one in order."""
    one = http_request("/v1/traces", itlib.trace_request(span_name=b"pipelined"))
    n = 2000
    with RawConn(h.http_port, timeout=60) as c:
        sender = threading.Thread(target=c.send, args=(one * n,), daemon=True)
        sender.start()
        time.sleep(1.0)
        for i in range(n):
            r = c.read_response()
            assert r.status == 200, (i, r)
        sender.join(30)


# ---------- 6. gRPC ----------

def test_grpc_over_limit_by_one(h):
    body = itlib.trace_request_of_size(itlib.GRPC_MSG_LIMIT + 1)
    resp, code, details = grpc_call(h, body)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)


def test_grpc_length_prefix_4gib(h):
    """A prefix declaring 4 GiB - 1 with a few bytes behind it: over the limit, refused before
    anything that size is allocated."""
    status, hdrs = curl_grpc(h, grpc_frame(b"\x0a\x00", length=0xFFFFFFFF))
    answer("grpc_prefix_4gib", hdrs.get("grpc-status"))
    assert status == 200, (status, hdrs)
    assert hdrs.get("grpc-status") in ("8", "13"), hdrs


def test_grpc_truncated_message(h):
    status, hdrs = curl_grpc(h, grpc_frame(b"\x0a\x00", length=100))
    assert status == 200 and hdrs.get("grpc-status") == "13", (status, hdrs)


def test_grpc_two_messages_in_unary(h):
    m = grpc_frame(itlib.trace_request())
    status, hdrs = curl_grpc(h, m + m)
    assert status == 200 and hdrs.get("grpc-status") == "13", (status, hdrs)


def test_grpc_compressed_flag_without_encoding(h):
    status, hdrs = curl_grpc(h, grpc_frame(itlib.gzip_bytes(itlib.trace_request()),
                                           compressed=True))
    assert status == 200 and hdrs.get("grpc-status") == "13", (status, hdrs)


def test_grpc_bad_gzip_message(h):
    status, hdrs = curl_grpc(h, grpc_frame(b"\x1f\x8b garbage", compressed=True),
                             ["grpc-encoding: gzip"])
    assert status == 200 and hdrs.get("grpc-status") == "13", (status, hdrs)


def test_grpc_invalid_utf8(h):
    resp, code, details = grpc_call(h, PB_INVALID["invalid_utf8_byte_ff"])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


def test_grpc_deep_nesting(h):
    resp, code, details = grpc_call(h, PB_INVALID["deep_nesting_10000_arrays"])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


# ---------- 7. HTTP/2 transport attacks ----------

def test_h2_rapid_reset(h):
    """CVE-2023-44487: HEADERS then RST_STREAM, thousands of times. nghttp2's reset rate limit
    (1000 burst) ends the connection with GOAWAY; nothing leaks."""
    with h2raw.H2Conn(h.grpc_port, timeout=10) as c:
        out = bytearray()
        for i in range(5000):
            sid = 2 * i + 1
            out += h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, sid,
                               h2raw.header_block(TRACES_GRPC, "application/grpc"))
            out += h2raw.frame(h2raw.RST_STREAM, 0, sid, struct.pack(">I", h2raw.CANCEL))
        try:
            c.send(bytes(out))
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames, _ = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
        code = h2raw.goaway_code(frames)
        answer("h2_rapid_reset_goaway", code)
        assert code is not None or c.eof, "5000 rapid resets: neither GOAWAY nor close"


def test_h2_settings_flood(h):
    """SETTINGS frames faster than the client reads their ACKs: GOAWAY ENHANCE_YOUR_CALM once
    more than 1000 ACKs are queued."""
    with h2raw.H2Conn(h.http_port, timeout=10) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            c.send(h2raw.frame(h2raw.SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)) * 20000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames, _ = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
        answer("h2_settings_flood_goaway", h2raw.goaway_code(frames))
        assert h2raw.goaway_code(frames) == h2raw.ENHANCE_YOUR_CALM or c.eof, frames[-3:]


def test_h2_ping_flood(h):
    with h2raw.H2Conn(h.http_port, timeout=10) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            c.send(h2raw.frame(h2raw.PING, 0, 0, b"12345678") * 50000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames, _ = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
        answer("h2_ping_flood_goaway", h2raw.goaway_code(frames))
        assert h2raw.goaway_code(frames) == h2raw.ENHANCE_YOUR_CALM or c.eof


def test_h2_settings_too_many_entries(h):
    """One SETTINGS frame of 1000 entries (nghttp2 takes 32): GOAWAY."""
    with h2raw.H2Conn(h.http_port, timeout=10) as c:
        c.send(h2raw.frame(h2raw.SETTINGS, 0, 0, struct.pack(">HI", 4, 65535) * 1000))
        frames, _ = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
        answer("h2_settings_1000_entries_goaway", h2raw.goaway_code(frames))
        assert h2raw.goaway_code(frames) == h2raw.ENHANCE_YOUR_CALM or c.eof, frames[-3:]


def test_h2_continuation_flood(h):
    """HEADERS without END_HEADERS followed by endless CONTINUATION frames (CVE-2024-27316
    class): the connection ends at nghttp2's CONTINUATION limit or the header-size limit."""
    with h2raw.H2Conn(h.http_port, timeout=10) as c:
        c.send(h2raw.frame(h2raw.HEADERS, 0, 1, h2raw.header_block()))
        cont = h2raw.frame(h2raw.CONTINUATION, 0, 1, b"\x00\x01x\x01y" * 1000)
        try:
            for _ in range(2000):
                c.send(cont)
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames, _ = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
        answer("h2_continuation_flood_goaway", h2raw.goaway_code(frames))
        assert h2raw.goaway_code(frames) is not None or c.eof, frames[-3:]


def test_h2_streams_over_128_refused(h):
    """129 open streams on one connection: the 129th is refused (RST_STREAM REFUSED_STREAM or
    PROTOCOL_ERROR), the first 128 still complete."""
    with h2raw.H2Conn(h.http_port, timeout=20) as c:
        c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK, timeout=5)
        body = itlib.trace_request()
        for i in range(129):
            c.request(2 * i + 1, body, end=False)
        frames, rst = c.frames_until(lambda f: f[0] == h2raw.RST_STREAM and f[2] == 257,
                                     timeout=10)
        answer("h2_129th_stream", ("RST", struct.unpack(">I", rst[3])[0]) if rst is not None
               else ("GOAWAY", h2raw.goaway_code(frames)))
        refused = rst is not None and struct.unpack(">I", rst[3])[0] in (
            h2raw.REFUSED_STREAM, h2raw.PROTOCOL_ERROR)
        assert refused or h2raw.goaway_code(frames) is not None, frames[-5:]
        if rst is not None:
            for i in range(128):
                c.send(h2raw.frame(h2raw.DATA, h2raw.END_STREAM, 2 * i + 1))
            done = set()
            deadline = time.monotonic() + 20
            while len(done) < 128 and time.monotonic() < deadline:
                f = c.read_frame(timeout=1)
                if f is None and c.eof:
                    break
                if f is not None and f[0] in (h2raw.HEADERS, h2raw.DATA) and f[1] & 1:
                    done.add(f[2])
            assert len(done) == 128, f"{len(done)} of 128 streams completed"


def test_h2_window_update_overflow(h):
    with h2raw.H2Conn(h.http_port, timeout=10) as c:
        c.send(h2raw.frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)) * 2)
        frames, _ = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
        answer("h2_window_overflow_goaway", h2raw.goaway_code(frames))
        assert h2raw.goaway_code(frames) == h2raw.FLOW_CONTROL_ERROR or c.eof, frames[-3:]


def test_h2_data_on_stream_zero(h):
    with h2raw.H2Conn(h.http_port, timeout=10) as c:
        c.send(h2raw.frame(h2raw.DATA, 0, 0, b"x" * 10))
        frames, _ = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
        answer("h2_data_stream0_goaway", h2raw.goaway_code(frames))
        assert h2raw.goaway_code(frames) == h2raw.PROTOCOL_ERROR or c.eof, frames[-3:]


def test_h2_bad_preface(h):
    with socket.create_connection(("127.0.0.1", h.grpc_port), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\0" * 100)
        s.settimeout(5)
        data = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        except (ConnectionResetError, socket.timeout):
            pass
        # Either closed at once or a GOAWAY then closed; never left hanging.
        assert b"HTTP/1.1 200" not in data


def test_h2_header_list_too_large(h):
    """HPACK-literal headers over the advertised MAX_HEADER_LIST_SIZE: refused (431 or a reset),
    without buffering them."""
    with h2raw.H2Conn(h.http_port, timeout=10) as c:
        extra = [(f"x-h{i}", "a" * 4000) for i in range(40)]
        block = h2raw.header_block(extra=extra)
        frames = bytearray()
        for off in range(0, len(block), 16384):
            chunk = block[off:off + 16384]
            ftype = h2raw.HEADERS if off == 0 else h2raw.CONTINUATION
            last = off + 16384 >= len(block)
            flags = (h2raw.END_HEADERS if last else 0) | (h2raw.END_STREAM if off == 0 else 0)
            frames += h2raw.frame(ftype, flags, 1, chunk)
        c.send(bytes(frames))
        status, body, rst, got = c.response(1, timeout=10)
        answer("h2_header_list_too_large", {"status": status, "rst": rst,
                                            "goaway": h2raw.goaway_code(got)})
        assert status == 431 or rst is not None or h2raw.goaway_code(got) is not None, got[-3:]


def test_h2_body_over_limit(h):
    """One stream with a 21 MiB body over h2c: 413 (the body is not buffered past the limit)."""
    rc, out, err = itlib.curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                               "-H", "Content-Type: " + PB, "--data-binary", "@-",
                               h.http_url + "/v1/traces"], input_data=b"\x0a\x00" * (21 * MiB // 2))
    assert rc == 0, err
    assert out.decode() == "413", out


# ---------- 8. slowloris (started by the fixture; checked last) ----------

def _check_slow(h, key):
    t = STATE[key]
    t.join(timeout=max(0.0, IDLE_TIMEOUT + 20 - (time.monotonic() - t.started)))
    assert not t.is_alive(), f"{key}: still open {time.monotonic() - t.started:.0f}s later " \
                             f"({t.sent} bytes dribbled)"
    assert t.closed_after is not None
    # Closed by the idle timeout: not before it (a byte every 5 s is progress of a kind), and
    # not much after it.
    assert t.closed_after <= IDLE_TIMEOUT + 15, t.closed_after


def test_slowloris_headers(h):
    _check_slow(h, "slow_headers")


def test_slowloris_body(h):
    """Body bytes push the idle timer back (a slow upload is not cut while it moves), but
    receivers.request_timeout (60 s) bounds the whole request: 408 and closed."""
    _check_slow(h, "slow_body")
    assert STATE["slow_body"].closed_after >= 55, STATE["slow_body"].closed_after
    assert STATE["slow_body"].answer.startswith(b"HTTP/1.1 408 "), STATE["slow_body"].answer


# ---------- receivers.request_timeout at its boundary (a daemon of its own, 2 s) ----------

REQUEST_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def tagent(tmp_path_factory):
    env = dict(os.environ, DATALAYER_OTEL_AGENT_REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT:g}s")
    a = itlib.Agent(tmp_path_factory.mktemp("request_timeout"), env=env).start()
    try:
        yield a
    finally:
        if a.alive():
            a.stop()
        else:
            pytest.fail(f"dlotel agent died (exit {a.proc.returncode}):\n{itlib.tail(a.log_path)}")


def trickle_h1(port, body, seconds):
    """Sends a request's head, then its body a byte at a time spread over |seconds|; returns the
    time taken to the daemon's answer, the answer, and whether the connection was then closed."""
    head = http_request("/v1/traces", body)
    head = head[:head.index(b"\r\n\r\n") + 4]
    with RawConn(port, timeout=10) as c:
        t0 = time.monotonic()
        c.send(head)
        gap = seconds / len(body)
        for i in range(len(body)):
            time.sleep(gap)
            try:
                c.send(body[i:i + 1])
            except OSError:
                break
            c.sock.setblocking(False)
            try:
                if c.sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            finally:
                c.sock.setblocking(True)
        c.sock.settimeout(10)
        r = c.read_response()
        elapsed = time.monotonic() - t0
        return elapsed, r, c.closed_by_peer(timeout=3)


def test_request_timeout_http1_boundary(tagent):
    """A body that moves (a byte every ~80 ms) but completes within the 2 s deadline is
    answered 200; one that would take 4 s gets 408 at the deadline and the connection closes.
    The idle timeout (60 s) would have let both through."""
    body = itlib.trace_request(span_name=b"slow")
    elapsed, r, _ = trickle_h1(tagent.http_port, body, REQUEST_TIMEOUT * 0.5)
    assert r.status == 200, r
    assert elapsed < REQUEST_TIMEOUT, elapsed
    elapsed, r, closed = trickle_h1(tagent.http_port, body, REQUEST_TIMEOUT * 2)
    assert r.status == 408, r
    assert REQUEST_TIMEOUT - 0.2 <= elapsed <= REQUEST_TIMEOUT + 1.5, elapsed
    assert closed, "the connection stayed open after the 408"
    itlib.assert_serving(tagent, "after a 408")


@pytest.mark.parametrize("grpc_port", [False, True], ids=["h2_http_port", "grpc_port"])
def test_request_timeout_http2_stream(tagent, grpc_port):
    """HTTP/2: a stream whose body trickles past the deadline is answered (408; gRPC: a
    Trailers-Only 200 with DEADLINE_EXCEEDED) and reset with NO_ERROR; the connection stays and
    serves the next stream."""
    port = tagent.grpc_port if grpc_port else tagent.http_port
    path, ctype = (TRACES_GRPC, "application/grpc") if grpc_port else ("/v1/traces", PB)
    with h2raw.H2Conn(port, timeout=10) as c:
        t0 = time.monotonic()
        c.send(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, 1,
                           h2raw.header_block(path=path, content_type=ctype)))
        got = []
        answered = None
        rst = None
        while time.monotonic() - t0 < REQUEST_TIMEOUT + 5 and rst is None:
            c.send(h2raw.frame(h2raw.DATA, 0, 1, b"\0"))
            frames, _ = c.frames_until(lambda f: f[2] == 1, timeout=0.3)
            got += frames
            for ftype, flags, sid, payload in frames:
                if sid == 1 and ftype == h2raw.HEADERS and answered is None:
                    answered = (h2raw.status_of(payload, c.dyn), time.monotonic() - t0)
                if sid == 1 and ftype == h2raw.RST_STREAM:
                    rst = struct.unpack(">I", payload)[0]
        assert answered is not None, got[-5:]
        status, at = answered
        assert status == (200 if grpc_port else 408), answered
        assert REQUEST_TIMEOUT - 0.2 <= at <= REQUEST_TIMEOUT + 1.5, answered
        assert rst == h2raw.NO_ERROR, (rst, got[-5:])
        # The connection goes on.
        if grpc_port:
            req = itlib.trace_request(span_name=b"after")
            c.send(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, 3,
                               h2raw.header_block(path=path, content_type=ctype)) +
                   h2raw.frame(h2raw.DATA, h2raw.END_STREAM, 3,
                               b"\0" + struct.pack(">I", len(req)) + req))
        else:
            c.request(3, itlib.trace_request(span_name=b"after"))
        status, _, rst3, got3 = c.response(3, timeout=10)
        assert status == 200 and rst3 is None, got3[-5:]


def test_slowloris_h2_no_request(h):
    _check_slow(h, "slow_h2")
