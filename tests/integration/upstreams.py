"""Upstreams the forwarding tests control, speaking the real protocols: an OTLP/HTTP server on
Python's http.server and an OTLP/gRPC server on grpcio (a generic handler with identity
serializers, so the test sees the exact bytes the agent sent). Both record every request and can
be scripted: answer the next N requests with a status (and Retry-After / RetryInfo), stall
(accept and never answer), close the connection, go down (connection refused) and come back on
the same port.

Also here: a hand-written protobuf reader that turns Export*ServiceRequests into canonical
Python values (ids, names, typed attributes) in the same shape itlib uses for OTLP/JSON, so that
"delivered equals sent" can be checked whatever the encoding on each side.
"""

import base64
import collections
import gzip
import http.server
import os
import socket
import struct
import subprocess
import threading
import time

import grpc

import itlib

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
SIGNAL_OF_METHOD = {TRACE_METHOD: "traces", METRICS_METHOD: "metrics", LOGS_METHOD: "logs"}

STALL_LIMIT = 300.0  # a stalled request is released after this long at the latest


def zstd_decompress(data):
    p = subprocess.run([itlib.zstd_cli(), "-q", "-d", "-c"], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise ValueError(f"zstd -d failed: {p.stderr[-500:]!r}")
    return p.stdout


class Rec:
    """One request an upstream saw."""

    def __init__(self, signal, path, headers, raw, body, encoding, outcome):
        self.signal = signal
        self.path = path
        self.headers = headers  # lowercase name -> value
        self.raw = raw  # as on the wire
        self.body = body  # decompressed protobuf
        self.encoding = encoding
        self.outcome = outcome  # "ok", or what the script answered ("503", "UNAVAILABLE"...)
        self.time = time.monotonic()

    def __repr__(self):
        return f"<Rec {self.signal} {self.path} {self.outcome} {len(self.body)}B {self.encoding}>"


class _Recorder:
    """What both upstreams share: the log of requests, the script, waiting."""

    def __init__(self):
        self.cond = threading.Condition()
        self.recs = []
        self.script = collections.deque()
        self.stall_all = False
        self.release = threading.Event()

    def push(self, *actions):
        """Queues actions for the next requests, one each: dicts like {"status": 503,
        "headers": {"Retry-After": "1"}}, {"code": "UNAVAILABLE"}, {"stall": True},
        {"close": True}."""
        with self.cond:
            self.script.extend(actions)

    def next_action(self):
        with self.cond:
            if self.stall_all:
                return {"stall": True}
            return self.script.popleft() if self.script else None

    def stall(self, on=True):
        """Every request from now on is held unanswered until stall(False)."""
        with self.cond:
            self.stall_all = on
            if on:
                self.release.clear()
            else:
                self.release.set()

    def record(self, rec):
        with self.cond:
            self.recs.append(rec)
            self.cond.notify_all()

    def delivered(self, signal=None):
        with self.cond:
            return [r for r in self.recs if r.outcome == "ok" and
                    (signal is None or r.signal == signal)]

    def all(self):
        with self.cond:
            return list(self.recs)

    def wait(self, pred, timeout, what="requests"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if pred(self):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; saw "
                                         f"{self.recs[-20:]}")
                self.cond.wait(min(left, 0.1))

    def wait_items(self, signal, n, timeout, counter=None):
        counter = counter or count_items
        self.wait(lambda u: sum(counter(signal, r.body) for r in u.delivered(signal)) >= n,
                  timeout, what=f"{n} {signal} items delivered")


# ---------- OTLP/HTTP ----------

class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, upstream):
        self.upstream = upstream
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_POST(self):
        up = self.server.upstream
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        headers = {k.lower(): v for k, v in self.headers.items()}
        enc = (headers.get("content-encoding") or "identity").lower()
        try:
            body = (gzip.decompress(raw) if enc == "gzip" else
                    zstd_decompress(raw) if enc == "zstd" else raw)
        except Exception as e:  # noqa: BLE001 - a bad body is a test failure, recorded as such
            body = b""
            enc = f"undecodable {enc}: {e}"
        path = self.path
        signal = path.rsplit("/", 1)[-1] if path.rsplit("/", 1)[-1] in (
            "traces", "metrics", "logs") else "unknown"
        action = up.next_action()
        if action and action.get("stall"):
            up.record(Rec(signal, path, headers, raw, body, enc, "stalled"))
            up.release.wait(STALL_LIMIT)
            self.close_connection = True
            return
        if action and action.get("close"):
            up.record(Rec(signal, path, headers, raw, body, enc, "closed"))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status = action.get("status", 200) if action else 200
        rbody = action.get("body", b"") if action else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(rbody)))
        for k, v in (action.get("headers", {}) if action else {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(rbody)
        # Recorded after the answer is out, so that a test that saw it delivered can rely on
        # the agent having had the 200 too (give or take the socket).
        up.record(Rec(signal, path, headers, raw, body, enc,
                      "ok" if 200 <= status < 300 else str(status)))


class HttpUpstream(_Recorder):
    """An OTLP/HTTP collector on 127.0.0.1: POST <anything>/v1/{traces,metrics,logs}."""

    def __init__(self, port=0):
        super().__init__()
        self.port = port
        self.server = None
        self.thread = None
        self.start()

    def start(self):
        deadline = time.monotonic() + 10
        while True:
            try:
                self.server = _HttpServer(("127.0.0.1", self.port), _HttpHandler, self)
                break
            except OSError:
                # Coming back on the same port: the old socket may linger a moment.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()
        return self

    def url(self, base=""):
        return f"http://127.0.0.1:{self.port}{base}"

    def down(self):
        """Stops listening and drops every connection: the agent sees connection refused."""
        if self.server is None:
            return
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.server.drop_connections()
        self.server = None

    def up(self):
        """Listens again on the same port."""
        self.release.clear()
        return self.start()

    def close(self):
        self.release.set()
        self.down()


# ---------- OTLP/gRPC ----------

def _pb_bytes(num, data):
    return itlib.field_bytes(num, data)


def rpc_status_with_retry_info(code, message, delay_s):
    """google.rpc.Status {code, message, details: [Any(RetryInfo{retry_delay})]}, serialized."""
    secs = int(delay_s)
    nanos = int(round((delay_s - secs) * 1e9))
    duration = (itlib.field_varint(1, secs) if secs else b"") + (
        itlib.field_varint(2, nanos) if nanos else b"")
    retry_info = _pb_bytes(1, duration)
    any_ = _pb_bytes(1, b"type.googleapis.com/google.rpc.RetryInfo") + _pb_bytes(2, retry_info)
    return (itlib.field_varint(1, code) + _pb_bytes(2, message.encode()) + _pb_bytes(3, any_))


class GrpcUpstream(_Recorder):
    """An OTLP/gRPC collector on grpcio (h2c on 127.0.0.1), recording raw messages."""

    def __init__(self, port=0):
        super().__init__()
        self.port = port
        self.server = None
        self.start()

    def _handler(self, method):
        signal = SIGNAL_OF_METHOD[method]

        def handle(request, context):
            md = {k.lower(): v for k, v in context.invocation_metadata()}
            action = self.next_action()
            if action and action.get("stall"):
                self.record(Rec(signal, method, md, request, request, "grpc", "stalled"))
                self.release.wait(STALL_LIMIT)
                context.abort(grpc.StatusCode.UNAVAILABLE, "released")
            if action and action.get("code"):
                code = getattr(grpc.StatusCode, action["code"])
                msg = action.get("details", "scripted failure")
                if "retry_delay" in action:
                    context.set_trailing_metadata((
                        ("grpc-status-details-bin",
                         rpc_status_with_retry_info(code.value[0], msg, action["retry_delay"])),
                    ))
                self.record(Rec(signal, method, md, request, request, "grpc", action["code"]))
                context.abort(code, msg)
            self.record(Rec(signal, method, md, request, request, "grpc", "ok"))
            return b""

        return grpc.unary_unary_rpc_method_handler(handle)

    def start(self):
        from concurrent.futures import ThreadPoolExecutor
        handlers = {}
        for method in SIGNAL_OF_METHOD:
            service, name = method[1:].rsplit("/", 1)
            handlers.setdefault(service, {})[name] = self._handler(method)
        generic = [grpc.method_handlers_generic_handler(s, h) for s, h in handlers.items()]
        deadline = time.monotonic() + 10
        while True:
            self.server = grpc.server(ThreadPoolExecutor(max_workers=16),
                                      options=[("grpc.so_reuseport", 0),
                                               ("grpc.max_receive_message_length", 64 << 20)])
            self.server.add_generic_rpc_handlers(generic)
            port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
            if port != 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot bind gRPC upstream to port {self.port}")
            time.sleep(0.05)
        self.port = port
        self.server.start()
        return self

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def down(self):
        if self.server is None:
            return
        self.release.set()
        self.server.stop(0).wait(10)
        self.server = None

    def up(self):
        self.release.clear()
        return self.start()

    def close(self):
        self.down()


# ---------- protobuf, canonical ----------

def _fields(buf):
    return list(itlib.decode_fields(buf))


def _any_value(buf):
    """AnyValue as itlib.any_value() shapes OTLP/JSON."""
    for num, wt, v in _fields(buf):
        if num == 1:
            return {"type": "string", "value": v.decode("utf-8")}
        if num == 2:
            return {"type": "bool", "value": bool(v)}
        if num == 3:
            return {"type": "int", "value": str(v - (1 << 64) if v >= 1 << 63 else v)}
        if num == 4:
            return {"type": "double", "value": struct.unpack("<d", struct.pack("<Q", v))[0]}
        if num == 5:
            return {"type": "array",
                    "value": [_any_value(x) for n2, _, x in _fields(v) if n2 == 1]}
        if num == 6:
            return {"type": "kvlist", "value": _attrs([x for n2, _, x in _fields(v) if n2 == 1])}
        if num == 7:
            return {"type": "bytes", "value": base64.b64encode(v).decode()}
    return {"type": "empty", "value": None}


def _attrs(kv_bufs):
    out = {}
    for kv in kv_bufs:
        key, val = "", None
        for num, _, v in _fields(kv):
            if num == 1:
                key = v.decode("utf-8")
            elif num == 2:
                val = v
        out[key] = _any_value(val) if val is not None else {"type": "empty", "value": None}
    return out


def _resource_attrs(buf):
    return _attrs([v for n, _, v in _fields(buf) if n == 1])


def spans(body):
    """Canonical spans of an ExportTraceServiceRequest: one dict each, in order."""
    out = []
    for n1, _, rs in _fields(body):
        if n1 != 1:
            continue
        res = {}
        for n2, _, v in _fields(rs):
            if n2 == 1:
                res = _resource_attrs(v)
        for n2, _, ss in _fields(rs):
            if n2 != 2:
                continue
            scope = ""
            for n3, _, v in _fields(ss):
                if n3 == 1:
                    scope = next((x.decode() for n4, _, x in _fields(v) if n4 == 1), "")
            for n3, _, sp in _fields(ss):
                if n3 != 2:
                    continue
                d = {"resource": res, "scope": scope, "attributes": {}, "events": 0,
                     "parentSpanId": "", "kind": 0}
                attrs = []
                for n4, _, v in _fields(sp):
                    if n4 == 1:
                        d["traceId"] = v.hex()
                    elif n4 == 2:
                        d["spanId"] = v.hex()
                    elif n4 == 4:
                        d["parentSpanId"] = v.hex()
                    elif n4 == 5:
                        d["name"] = v.decode("utf-8")
                    elif n4 == 6:
                        d["kind"] = v
                    elif n4 == 7:
                        d["start"] = v
                    elif n4 == 8:
                        d["end"] = v
                    elif n4 == 9:
                        attrs.append(v)
                    elif n4 == 11:
                        d["events"] += 1
                d["attributes"] = _attrs(attrs)
                out.append(d)
    return out


def span_from_json(resource, scope, sp):
    """The same canonical form from OTLP/JSON (the file exporter's output, or a .json payload)."""
    return {
        "resource": itlib.attrs((resource.get("resource") or {}).get("attributes")),
        "scope": (scope.get("scope") or {}).get("name", ""),
        "traceId": itlib.hexid(sp.get("traceId")),
        "spanId": itlib.hexid(sp.get("spanId")),
        "parentSpanId": itlib.hexid(sp.get("parentSpanId")),
        "name": sp.get("name", ""),
        "kind": int(sp.get("kind", 0)),
        "start": itlib.u64(sp.get("startTimeUnixNano")),
        "end": itlib.u64(sp.get("endTimeUnixNano")),
        "attributes": itlib.attrs(sp.get("attributes")),
        "events": len(sp.get("events") or []),
    }


def logs(body):
    """Canonical log records of an ExportLogsServiceRequest: (resource attrs, body, attrs...)."""
    out = []
    for n1, _, rl in _fields(body):
        if n1 != 1:
            continue
        for n2, _, sl in _fields(rl):
            if n2 != 2:
                continue
            for n3, _, lr in _fields(sl):
                if n3 != 2:
                    continue
                d = {"attributes": {}, "body": None, "traceId": "", "spanId": "", "time": 0}
                attrs = []
                for n4, _, v in _fields(lr):
                    if n4 == 1:
                        d["time"] = v
                    elif n4 == 5:
                        d["body"] = _any_value(v)
                    elif n4 == 6:
                        attrs.append(v)
                    elif n4 == 9:
                        d["traceId"] = v.hex()
                    elif n4 == 10:
                        d["spanId"] = v.hex()
                d["attributes"] = _attrs(attrs)
                out.append(d)
    return out


def log_from_json(resource, scope, lr):
    """logs()' canonical form from OTLP/JSON."""
    body = lr.get("body")
    return {
        "attributes": itlib.attrs(lr.get("attributes")),
        "body": itlib.any_value(body) if body is not None else None,
        "traceId": itlib.hexid(lr.get("traceId")),
        "spanId": itlib.hexid(lr.get("spanId")),
        "time": itlib.u64(lr.get("timeUnixNano")),
    }


def metric_from_json(resource, scope, m):
    """metric_points()' (name, points) from OTLP/JSON."""
    points = 0
    for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
        if kind in m:
            points += len(m[kind].get("dataPoints") or [])
    return (m.get("name", ""), points)


def canonical(signal, body):
    """The canonical items of one protobuf request of |signal|, as hashable strings."""
    import json as _json
    if signal == "traces":
        items = spans(body)
    elif signal == "logs":
        items = logs(body)
    else:
        items = metric_points(body)
    return [_json.dumps(x, sort_keys=True) for x in items]


def canonical_json(signal, reqs):
    """The same from OTLP/JSON requests (parsed), e.g. a dlotel file exporter's lines."""
    import json as _json
    if signal == "traces":
        items = [span_from_json(*t) for t in itlib.spans_of(reqs)]
    elif signal == "logs":
        items = [log_from_json(*t) for t in itlib.logs_of(reqs)]
    else:
        items = [metric_from_json(*t) for t in itlib.metrics_of(reqs)]
    return [_json.dumps(x, sort_keys=True) for x in items]


def metric_points(body):
    """(metric name, number of data points) for every metric of an ExportMetricsServiceRequest."""
    out = []
    for n1, _, rm in _fields(body):
        if n1 != 1:
            continue
        for n2, _, sm in _fields(rm):
            if n2 != 2:
                continue
            for n3, _, m in _fields(sm):
                if n3 != 2:
                    continue
                name, points = "", 0
                for n4, _, v in _fields(m):
                    if n4 == 1:
                        name = v.decode()
                    elif n4 in (5, 7, 9, 10, 11):  # gauge, sum, histogram, exp histogram, summary
                        points += sum(1 for n5, _, _ in _fields(v) if n5 == 1)
                out.append((name, points))
    return out


def count_items(signal, body):
    if signal == "traces":
        return len(spans(body))
    if signal == "logs":
        return len(logs(body))
    return sum(p for _, p in metric_points(body))


def span_key(d):
    return (d["traceId"], d["spanId"])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def env_without_datalayer():
    """The test process's environment without DATALAYER_* and OTEL_* variables, so that the
    developer's own settings cannot change what a test runs."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("DATALAYER_") and not k.startswith("OTEL_")}
