"""Helpers for the forwarding tests: a `dlotel agent` with upstream exporters (instead of the
file exporter), its admin endpoint (/metrics parsed, /healthz), and clients that send the real
payload files over each receiver transport.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import time

import grpc

import itlib
import upstreams

# Short retry intervals so that retry cases take seconds, not the defaults' minutes.
FAST_RETRY = ["retry.initial_interval=100ms", "retry.max_interval=500ms"]


def exporter_sets(name, etype, endpoint, compression="none", extra=()):
    """--set arguments that define exporter |name|."""
    out = []
    for kv in [f"type={etype}", f"endpoint={endpoint}", f"compression={compression}",
               *FAST_RETRY, *extra]:
        out += ["--set", f"exporters.{name}.{kv}"]
    return out


class FwdAgent(itlib.Agent):
    """A `dlotel agent` whose exporters come from |args| (--set exporters.NAME...), with its own
    state directory (disk queues) under |workdir|."""

    def exporter_args(self):
        return []

    @property
    def state_dir(self):
        return os.path.join(self.workdir, "state")

    # ---------- admin ----------

    def admin_get(self, path, method="GET"):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def metrics_text(self):
        status, headers, body = self.admin_get("/metrics")
        assert status == 200, (status, body)
        return body.decode()

    def metrics(self):
        return parse_prometheus(self.metrics_text())

    def metric(self, name, **labels):
        """The sum of the samples of |name| whose labels include |labels|."""
        return metric_sum(self.metrics(), name, **labels)

    def healthz(self):
        status, headers, body = self.admin_get("/healthz")
        assert status == 200, (status, body)
        assert headers.get("content-type", "").startswith("application/json"), headers
        return json.loads(body)

    def wait_health(self, status, timeout=10.0):
        """Waits until /healthz says |status|. An upstream has a batch before the agent has read
        the upstream's answer, so a test that just saw the delivery must give it a moment."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.healthz()
            if h["status"] == status or time.monotonic() > deadline:
                assert h["status"] == status, h
                return h
            time.sleep(0.05)

    def wait_metric(self, name, pred, timeout=15.0, **labels):
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name, **labels)
            if pred(v):
                return v
            self.assert_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} = {v} after {timeout}s; log:\n"
                                     f"{itlib.tail(self.log_path)}")
            time.sleep(0.05)

    # ---------- signals ----------

    def signal(self, sig):
        self.proc.send_signal(sig)

    def sigkill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        self.log.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """[(name, {label: value}, float)] from the text exposition format, checking that every
    sample belongs to a family announced by # HELP and # TYPE lines."""
    out = []
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            assert len(parts) == 4 and parts[3] in ("counter", "gauge"), line
            typed.add(parts[2])
            continue
        if line.startswith("#") or not line.strip():
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert name in typed, f"{name} has no # TYPE line before it"
        lbl = {}
        rest = labels
        while rest:
            lm = _LABEL.match(rest)
            assert lm, f"bad labels in {line!r}"
            lbl[lm.group(1)] = (lm.group(2).replace('\\n', '\n').replace('\\"', '"')
                                .replace('\\\\', '\\'))
            rest = rest[lm.end():]
            if rest.startswith(","):
                rest = rest[1:]
        out.append((name, lbl, float(value)))
    return out


def metric_sum(samples, name, **labels):
    return sum(v for n, lbl, v in samples
               if n == name and all(lbl.get(k) == str(x) for k, x in labels.items()))


# ---------- clients ----------

CT = {"pb": "application/x-protobuf", "json": "application/json"}


def http_post(port, signal_name, body, ctype="application/x-protobuf", encoding=None,
              timeout=30):
    """POSTs to the agent's OTLP/HTTP receiver; returns (status, headers, body)."""
    headers = {"Content-Type": ctype}
    if encoding == "gzip":
        body = itlib.gzip_bytes(body)
        headers["Content-Encoding"] = "gzip"
    elif encoding == "zstd":
        body = itlib.zstd_bytes(body)
        headers["Content-Encoding"] = "zstd"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", f"/v1/{signal_name}", body=body, headers=headers)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


METHOD = {"traces": upstreams.TRACE_METHOD, "metrics": upstreams.METRICS_METHOD,
          "logs": upstreams.LOGS_METHOD}


class GrpcClient:
    """Raw OTLP/gRPC Export calls (bytes in, bytes out) with grpcio."""

    def __init__(self, port, compression=None):
        opts = [("grpc.max_send_message_length", 64 << 20)]
        comp = {"gzip": grpc.Compression.Gzip, None: grpc.Compression.NoCompression}[compression]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=opts,
                                             compression=comp)
        self.calls = {s: self.channel.unary_unary(m) for s, m in METHOD.items()}

    def export(self, signal_name, body, timeout=30):
        return self.calls[signal_name](body, timeout=timeout)

    def close(self):
        self.channel.close()


def send(agent, transport, signal_name, pb=None, js=None, grpc_client=None):
    """Sends one request over |transport| (grpc, http/protobuf, http/json) and asserts it was
    accepted."""
    if transport == "grpc":
        c = grpc_client or GrpcClient(agent.grpc_port)
        try:
            c.export(signal_name, pb)
        finally:
            if grpc_client is None:
                c.close()
        return
    if transport == "http/protobuf":
        status, _, body = http_post(agent.http_port, signal_name, pb)
    else:
        status, _, body = http_post(agent.http_port, signal_name, js, ctype="application/json")
    assert status == 200, (status, body, itlib.tail(agent.log_path))


def run(args, env=None, timeout=30):
    p = subprocess.run([itlib.dlotel_bin()] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


# ---------- generated requests with numbered spans ----------

def numbered_spans(first, n, tag=b"dlotelfw", pad=0, service=b"dlotel-fwd-test"):
    """An ExportTraceServiceRequest of |n| spans numbered first..first+n-1: span id = the number
    (8 bytes big-endian), trace id = |tag| + the number, attribute "seq" = the number, and |pad|
    bytes of attribute "pad" to make it as large as a test needs."""
    spans = []
    for seq in range(first, first + n):
        sid = seq.to_bytes(8, "big")
        kv = itlib.field_bytes(1, b"seq") + itlib.field_bytes(2, itlib.field_varint(3, seq))
        span = (itlib.field_bytes(1, tag[:8].ljust(8, b"_") + sid) + itlib.field_bytes(2, sid) +
                itlib.field_bytes(5, b"op-%d" % seq) + itlib.field_varint(6, 1) +
                itlib.field_fixed64(7, 1767225600000000000 + seq) +
                itlib.field_fixed64(8, 1767225600001000000 + seq) + itlib.field_bytes(9, kv))
        if pad:
            span += itlib.field_bytes(9, itlib.field_bytes(1, b"pad") +
                                      itlib.field_bytes(2, itlib.field_bytes(1, b"p" * pad)))
        spans.append(itlib.field_bytes(2, span))
    resource = itlib.field_bytes(1, itlib.field_bytes(1, b"service.name") +
                                 itlib.field_bytes(2, itlib.field_bytes(1, service)))
    scope_spans = itlib.field_bytes(1, itlib.field_bytes(1, b"dlotel.test")) + b"".join(spans)
    return itlib.field_bytes(1, itlib.field_bytes(1, resource) + itlib.field_bytes(2, scope_spans))


def numbered_logs(first, n):
    """An ExportLogsServiceRequest of |n| log records whose span id field holds the number."""
    recs = []
    for seq in range(first, first + n):
        lr = (itlib.field_fixed64(1, 1767225600000000000 + seq) + itlib.field_varint(2, 9) +
              itlib.field_bytes(5, itlib.field_bytes(1, b"log %d" % seq)) +
              itlib.field_bytes(10, seq.to_bytes(8, "big")))
        recs.append(itlib.field_bytes(2, lr))
    resource = itlib.field_bytes(1, itlib.field_bytes(1, b"service.name") +
                                 itlib.field_bytes(2, itlib.field_bytes(1, b"dlotel-fwd-test")))
    scope_logs = itlib.field_bytes(1, itlib.field_bytes(1, b"dlotel.test")) + b"".join(recs)
    return itlib.field_bytes(1, itlib.field_bytes(1, resource) + itlib.field_bytes(2, scope_logs))


def seqs(signal_name, body):
    """The numbers of the spans or log records of one delivered request, in order."""
    if signal_name == "traces":
        return [int(s["spanId"], 16) for s in upstreams.spans(body)]
    return [int(r["spanId"], 16) for r in upstreams.logs(body)]


def delivered_seqs(up, signal_name):
    out = []
    for r in up.delivered(signal_name):
        out.extend(seqs(signal_name, r.body))
    return out


class UpstreamAgent(FwdAgent):
    """A second dlotel as an upstream: it receives on its gRPC/HTTP ports and writes what it
    got with its file exporter (OTLP/JSON lines)."""

    def exporter_args(self):
        return itlib.Agent.exporter_args(self)


# One batch of a signal is on the wire at a time (the pipeline's max_in_flight default, 1), so
# batches arrive in the order they were formed. A batch resent after a restart (at-least-once)
# is skipped as a duplicate; no other displacement is allowed.
IN_FLIGHT_WINDOW = 0


def assert_in_order(up, signal_name, window=IN_FLIGHT_WINDOW):
    """Each delivered batch holds increasing numbers, and batches arrive in the order they were
    formed, give or take the in-flight window. Duplicates (at-least-once) are skipped."""
    batches = [seqs(signal_name, r.body) for r in up.delivered(signal_name)]
    for b in batches:
        assert b == sorted(b), f"a batch is out of order: {b[:20]}..."
    firsts = [b[0] for b in batches if b]
    order = sorted(range(len(firsts)), key=lambda i: firsts[i])
    worst = max((abs(pos - i) for pos, i in enumerate(order)), default=0)
    assert worst <= window, f"batches arrived {worst} places out of order: {firsts[:50]}"
    return worst
