"""Helpers for dlotel's integration tests: run the real daemon, talk to it over real sockets,
and read what its file exporter wrote.

Nothing here imitates the daemon. The HTTP/1.1 response reader and the protobuf encoder below
exist only because the tests need byte-exact control over what goes on the wire (pipelining,
exact message sizes) and Debian's python3 has no h2 or protobuf runtime to do it for us.
"""

import ctypes
import gzip
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
JS_DIR = os.path.join(HERE, "js")
PAYLOADS = os.environ.get("DLOTEL_PAYLOADS_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "payloads"))

MiB = 1024 * 1024
HTTP_BODY_LIMIT = 20 * MiB
GRPC_MSG_LIMIT = 4 * MiB

# Process-wide deadline for one daemon start; generous because the machine is shared.
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0

# DLOTEL_VALGRIND=1 runs every daemon an Agent starts under valgrind (memcheck), which exits
# with VALGRIND_EXIT on any memory error or definite/indirect leak: stop() then fails on the exit
# code. Start-up and shutdown are slower under valgrind, so the deadlines stretch.
VALGRIND = os.environ.get("DLOTEL_VALGRIND") == "1"
VALGRIND_EXIT = 99
VALGRIND_SLOWDOWN = 8 if VALGRIND else 1


def valgrind_prefix():
    if not VALGRIND:
        return []
    vg = shutil.which("valgrind")
    if vg is None:
        raise RuntimeError("DLOTEL_VALGRIND=1 but valgrind is missing: run scripts/bootstrap.sh")
    return [vg, "--quiet", f"--error-exitcode={VALGRIND_EXIT}", "--leak-check=full",
            "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
            "--track-fds=no", "--num-callers=30"]


CRASH_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation fault",
                 "core dumped", "Assertion", "assertion failed", "stack smashing", "double free",
                 "free(): invalid", "malloc(): ")


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if the test process dies (watchdog exit, kill -9),
    so that no daemon outlives its test."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def dlotel_bin():
    path = os.environ.get("DLOTEL_BIN")
    if not path:
        raise RuntimeError("DLOTEL_BIN is not set: run the tests through ctest, or export "
                           "DLOTEL_BIN=<build>/bin/dlotel")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"DLOTEL_BIN={path} is not an executable file (is the build done?)")
    return path


def payload(name):
    with open(os.path.join(PAYLOADS, name), "rb") as f:
        return f.read()


def tail(path, limit=4000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return data[-limit:].decode("utf-8", "replace")


class Agent:
    """One `dlotel agent` process on ephemeral ports, with a file exporter into |workdir|."""

    def __init__(self, workdir, extra_args=(), env=None):
        self.workdir = str(workdir)
        self.env = env  # None: the test process's environment
        self.out_path = os.path.join(self.workdir, "out.jsonl")
        self.ready_path = os.path.join(self.workdir, "ready.json")
        self.log_path = os.path.join(self.workdir, "agent.log")
        self.extra_args = list(extra_args)
        self.proc = None
        self.grpc_port = None
        self.http_port = None
        self.admin_port = None
        self.returncode = None
        self.command = "agent"  # `dlotel serve` takes the same flags

    def exporter_args(self):
        """The exporters of this agent: a file exporter into the work directory."""
        return ["--exporter", "file", "--file-path", self.out_path]

    def start(self):
        # The admin endpoint on a free port and the state (disk queues) in the test's own
        # directory, so that agents of parallel tests share nothing.
        args = valgrind_prefix() + [dlotel_bin(), self.command,
                "--grpc-endpoint", "127.0.0.1:0",
                "--http-endpoint", "127.0.0.1:0",
                "--admin-endpoint", "127.0.0.1:0",
                "--state-dir", os.path.join(self.workdir, "state")] + self.exporter_args() + [
                "--ready-file", self.ready_path,
                "--log-level", "info"] + self.extra_args
        # A restart in the same directory must not read the last run's ready file.
        if os.path.exists(self.ready_path):
            os.unlink(self.ready_path)
        self.returncode = None
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                     env=self.env)
        deadline = time.monotonic() + READY_TIMEOUT * VALGRIND_SLOWDOWN
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"dlotel agent exited with {self.proc.returncode} before it was ready:\n"
                    f"{' '.join(args)}\n{tail(self.log_path)}")
            if os.path.exists(self.ready_path):
                try:
                    with open(self.ready_path) as f:
                        ready = json.load(f)
                    break
                except ValueError:
                    # The contract says the file is written atomically (rename), so a partial
                    # file is a bug; but give it one more poll before saying so.
                    time.sleep(0.05)
                    with open(self.ready_path) as f:
                        ready = json.load(f)
                    break
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"dlotel agent wrote no ready file within {READY_TIMEOUT}s:\n"
                                     f"{tail(self.log_path)}")
            time.sleep(0.02)
        assert ready.get("pid") == self.proc.pid, f"ready file pid {ready} != {self.proc.pid}"
        self.grpc_port = int(ready["grpc_port"])
        self.http_port = int(ready["http_port"])
        self.admin_port = int(ready["admin_port"]) if "admin_port" in ready else None
        assert 0 < self.grpc_port < 65536 and 0 < self.http_port < 65536, ready
        assert self.grpc_port != self.http_port, ready
        return self

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        if not self.alive():
            raise AssertionError(f"dlotel agent died (exit {self.proc.returncode}):\n"
                                 f"{tail(self.log_path)}")

    def stop(self):
        """SIGTERM, then check the exit was clean: code 0 within STOP_TIMEOUT, no crash report
        in the log."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            self.log.close()
            raise AssertionError(f"dlotel agent had already exited with {self.returncode}:\n"
                                 f"{tail(self.log_path)}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=STOP_TIMEOUT * VALGRIND_SLOWDOWN)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"dlotel agent did not exit within {STOP_TIMEOUT}s of SIGTERM:\n"
                                 f"{tail(self.log_path)}")
        finally:
            self.log.close()
        log = tail(self.log_path, 1 << 20)
        assert self.returncode == 0, (
            f"dlotel agent exited with {self.returncode} after SIGTERM "
            f"({'killed by signal ' + str(-self.returncode) if self.returncode < 0 else 'error'})"
            f":\n{log[-4000:]}")
        for marker in CRASH_MARKERS:
            assert marker not in log, f"dlotel agent log reports '{marker}':\n{log[-4000:]}"
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    # ---------- what the file exporter wrote ----------

    def out_size(self):
        try:
            return os.path.getsize(self.out_path)
        except FileNotFoundError:
            return 0

    def requests(self, since=0):
        """The complete JSON lines the file exporter wrote from byte offset |since|, parsed."""
        try:
            with open(self.out_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return []
        # A line still being written has no newline yet: leave it for the next poll.
        end = data.rfind(b"\n")
        out = []
        for n, line in enumerate(data[:end + 1].splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise AssertionError(f"file exporter line {n} is not JSON ({e}): {line[:300]!r}")
        return out

    def wait_requests(self, pred, since=0, timeout=10.0, what="data"):
        """Polls the file exporter's output until pred(requests) is true."""
        deadline = time.monotonic() + timeout
        while True:
            reqs = self.requests(since)
            if pred(reqs):
                return reqs
            self.assert_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what} in the file exporter "
                    f"output ({len(reqs)} new lines, counts {counts(reqs)}); agent log:\n"
                    f"{tail(self.log_path)}")
            time.sleep(0.05)


# ---------- OTLP/JSON as the file exporter writes it ----------

def spans_of(reqs):
    for r in reqs:
        for rs in r.get("resourceSpans", []) or []:
            for ss in rs.get("scopeSpans", []) or []:
                for sp in ss.get("spans", []) or []:
                    yield rs, ss, sp


def logs_of(reqs):
    for r in reqs:
        for rl in r.get("resourceLogs", []) or []:
            for sl in rl.get("scopeLogs", []) or []:
                for lr in sl.get("logRecords", []) or []:
                    yield rl, sl, lr


def metrics_of(reqs):
    for r in reqs:
        for rm in r.get("resourceMetrics", []) or []:
            for sm in rm.get("scopeMetrics", []) or []:
                for m in sm.get("metrics", []) or []:
                    yield rm, sm, m


def counts(reqs):
    return {"spans": sum(1 for _ in spans_of(reqs)), "logs": sum(1 for _ in logs_of(reqs)),
            "metrics": sum(1 for _ in metrics_of(reqs))}


def any_value(v):
    """An OTLP/JSON AnyValue as (type, value) in the shape send.js's manifest uses: ints as
    decimal strings (OTLP/JSON writes int64 as a string; numbers are accepted too), doubles as
    floats, arrays as lists, kvlists as dicts."""
    if v is None:
        return {"type": "empty", "value": None}
    keys = [k for k in v if k.endswith("Value")]
    assert len(keys) == 1, f"AnyValue must hold exactly one value, got {v}"
    k = keys[0]
    x = v[k]
    if k == "stringValue":
        assert isinstance(x, str), v
        return {"type": "string", "value": x}
    if k == "boolValue":
        assert isinstance(x, bool), v
        return {"type": "bool", "value": x}
    if k == "intValue":
        assert isinstance(x, (str, int)) and not isinstance(x, bool), v
        return {"type": "int", "value": str(int(x))}
    if k == "doubleValue":
        assert isinstance(x, (int, float, str)) and not isinstance(x, bool), v
        return {"type": "double", "value": float(x)}
    if k == "arrayValue":
        return {"type": "array", "value": [any_value(e) for e in (x.get("values") or [])]}
    if k == "kvlistValue":
        return {"type": "kvlist", "value": attrs(x.get("values") or [])}
    if k == "bytesValue":
        return {"type": "bytes", "value": x}
    raise AssertionError(f"unknown AnyValue kind {k}")


def attrs(kvs):
    out = {}
    for kv in kvs or []:
        assert kv["key"] not in out, f"duplicate attribute key {kv['key']}"
        out[kv["key"]] = any_value(kv.get("value"))
    return out


def norm_typed(t):
    """Normalises a manifest typed value for comparison (doubles as floats)."""
    if t["type"] == "double":
        return {"type": "double", "value": float(t["value"])}
    if t["type"] == "array":
        return {"type": "array", "value": [norm_typed(e) for e in t["value"]]}
    if t["type"] == "kvlist":
        return {"type": "kvlist", "value": {k: norm_typed(e) for k, e in t["value"].items()}}
    return t


def u64(x):
    """An OTLP/JSON fixed64/uint64 (string or number; absent is 0) as an int."""
    if x is None:
        return 0
    return int(x)


def hexid(x):
    return (x or "").lower()


# ---------- protobuf, by hand ----------

def varint(n):
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def field_fixed64(num, n):
    return varint(num << 3 | 1) + struct.pack("<Q", n)


def read_varint(buf, i):
    shift = 0
    n = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def decode_fields(buf):
    """Yields (field number, wire type, value) for a protobuf message; value is an int for
    varints and fixed, bytes for length-delimited fields."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 1:
            v = struct.unpack_from("<Q", buf, i)[0]
            i += 8
        elif wt == 2:
            n, i = read_varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated length-delimited field")
            v = bytes(buf[i:i + n])
            i += n
        elif wt == 5:
            v = struct.unpack_from("<I", buf, i)[0]
            i += 4
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, v


def decode_status(buf):
    """google.rpc.Status: code = 1 (int32), message = 2 (string), details = 3."""
    code, message = 0, ""
    for num, wt, v in decode_fields(buf):
        if num == 1 and wt == 0:
            code = v
        elif num == 2 and wt == 2:
            message = v.decode("utf-8")
    return code, message


def trace_request(span_name=b"boundary", attr_value=b"", trace_byte=1):
    """A valid ExportTraceServiceRequest with one span holding one string attribute."""
    kv = field_bytes(1, b"payload") + field_bytes(2, field_bytes(1, attr_value))
    span = (field_bytes(1, bytes([trace_byte]) * 16) + field_bytes(2, bytes([2]) * 8) +
            field_bytes(5, span_name) + field_varint(6, 1) +
            field_fixed64(7, 1767225600000000000) + field_fixed64(8, 1767225600001000000) +
            field_bytes(9, kv))
    resource = field_bytes(1, field_bytes(1, b"service.name") +
                           field_bytes(2, field_bytes(1, b"dlotel-it-boundary")))
    scope_spans = field_bytes(2, span)
    resource_spans = field_bytes(1, resource) + field_bytes(2, scope_spans)
    return field_bytes(1, resource_spans)


def trace_request_of_size(size):
    """A valid ExportTraceServiceRequest of exactly |size| bytes (size >= ~200): one span whose
    attribute string is sized to land on the byte. Varint lengths change size in steps, so the
    span name absorbs the odd byte when a step skips the target."""
    base = len(trace_request())
    n = max(0, size - base)
    for name_pad in range(0, 8):
        for k in range(n, max(-1, n - 64), -1):
            req = trace_request(span_name=b"boundary" + b"x" * name_pad, attr_value=b"a" * k)
            if len(req) == size:
                return req
    raise AssertionError(f"cannot build a request of exactly {size} bytes")


# ---------- compression ----------

def gzip_bytes(data, level=6):
    return gzip.compress(data, compresslevel=level, mtime=0)


def gzip_bomb(inflated_size):
    """A gzip stream of |inflated_size| zero bytes, compressed about 1000:1, made incrementally
    so the test never holds the inflated bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * MiB
    out = [c.compress(chunk) for _ in range(inflated_size // MiB)]
    out.append(c.compress(b"\0" * (inflated_size % MiB)))
    out.append(c.flush())
    return b"".join(out)


def zstd_cli():
    z = shutil.which("zstd")
    if z is None:
        raise AssertionError("the zstd command-line tool is missing: run scripts/bootstrap.sh "
                             "(Debian package zstd)")
    return z


def zstd_bytes(data, *args):
    """Compresses with the real zstd CLI. Fed from a file, zstd records the content size in
    the frame header, as most producers do."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return subprocess.run([zstd_cli(), "-q", "-c", *args, f.name], check=True,
                              stdout=subprocess.PIPE, timeout=60).stdout


def zstd_bomb_cli(inflated_size):
    """A zstd frame of |inflated_size| zero bytes from the zstd CLI, content size declared."""
    with tempfile.NamedTemporaryFile() as f:
        f.truncate(inflated_size)  # sparse: zeros without writing them
        return subprocess.run([zstd_cli(), "-q", "-c", f.name], check=True,
                              stdout=subprocess.PIPE, timeout=120).stdout


def zstd_rle_bomb(inflated_size):
    """A hand-made zstd frame (RFC 8878) that declares no content size, so only counting the
    output while decompressing can catch it: 128 KiB RLE blocks of zero bytes, 4 bytes each."""
    out = bytearray(struct.pack("<I", 0xFD2FB528))
    out.append(0x00)          # Frame_Header_Descriptor: no FCS, not single-segment, no checksum
    out.append((17 - 10) << 3)  # Window_Descriptor: 2^17 = 128 KiB window
    block = 128 * 1024
    left = inflated_size
    while left > 0:
        n = min(block, left)
        left -= n
        last = 1 if left == 0 else 0
        hdr = (n << 3) | (1 << 1) | last  # Block_Type 1 = RLE_Block
        out += struct.pack("<I", hdr)[:3] + b"\0"
    return bytes(out)


# ---------- HTTP/1.1 on a raw socket ----------

class RawResponse:
    def __init__(self, status, reason, headers, body, version):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lowercase name, value)
        self.body = body
        self.version = version

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def __repr__(self):
        return f"<HTTP {self.status} {self.reason} {self.headers} body={self.body[:200]!r}>"


class RawConn:
    """A TCP connection that reads HTTP/1.1 responses one after another from one buffer, so
    pipelined and keep-alive exchanges can be checked byte for byte."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError("connection closed by the agent")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head_request=False):
        status_line = self._line().decode("latin-1")
        version, status, reason = (status_line.split(" ", 2) + [""])[:3]
        if not version.startswith("HTTP/1."):
            raise AssertionError(f"bad status line {status_line!r}")
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        resp = RawResponse(int(status), reason, headers, b"", version)
        if 100 <= resp.status < 200 or resp.status in (204, 304) or head_request:
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                self._line()
            resp.body = body
        elif resp.header("content-length") is not None:
            resp.body = self._exact(int(resp.header("content-length")))
        else:
            # Body runs to the end of the connection.
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self, timeout=2.0):
        """True when the agent closed the connection (EOF or reset) within |timeout|."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def http_request(path, body, content_type="application/x-protobuf", method="POST", extra=()):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# ---------- curl ----------

def curl(args, timeout=60, input_data=None):
    """Runs curl; returns (returncode, stdout bytes, stderr text)."""
    cmd = ["curl", "-sS", "--max-time", str(timeout - 5)] + list(args)
    p = subprocess.run(cmd, input=input_data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def curl_post(url, body, content_type="application/x-protobuf", headers=(), extra=(), timeout=60):
    """POSTs |body| (bytes) with curl. Returns (status, headers dict, body bytes, verbose text)."""
    with tempfile.TemporaryDirectory() as d:
        bpath = os.path.join(d, "body")
        hpath = os.path.join(d, "headers")
        with open(bpath, "wb") as f:
            f.write(body)
        args = ["-v", "-o", os.path.join(d, "out"), "-D", hpath, "-X", "POST",
                "--data-binary", "@" + bpath, "-w", "%{http_code} %{http_version}"]
        if content_type is not None:
            args += ["-H", f"Content-Type: {content_type}"]
        for h in headers:
            args += ["-H", h]
        args += list(extra) + [url]
        rc, out, err = curl(args, timeout=timeout)
        if rc != 0:
            raise AssertionError(f"curl failed ({rc}): {err[-3000:]}")
        code, version = out.decode().split()
        with open(hpath, "rb") as f:
            hdrs = parse_header_dump(f.read())
        try:
            with open(os.path.join(d, "out"), "rb") as f:
                rbody = f.read()
        except FileNotFoundError:
            rbody = b""
        return int(code), hdrs, rbody, err + f"\nhttp_version={version}\n"


def parse_header_dump(raw):
    """The last response's headers (and trailers) from curl -D, names lowercased."""
    text = raw.decode("latin-1")
    blocks = [b for b in text.split("\r\n\r\n") if b.strip()]
    hdrs = {}
    final_seen = False
    for block in blocks:
        lines = block.split("\r\n")
        if lines[0].startswith("HTTP/"):
            code = int(lines[0].split()[1])
            if code >= 200:
                hdrs = {}
                final_seen = True
            elif final_seen:
                pass
            else:
                continue
            lines = lines[1:]
        for line in lines:
            if ":" in line:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
    return hdrs


def assert_serving(agent, what="after the previous request"):
    """The daemon keeps serving: a good request on a new connection gets 200 with the empty
    protobuf ExportTraceServiceResponse."""
    agent.assert_alive()
    body = trace_request(span_name=b"still-serving")
    with RawConn(agent.http_port) as c:
        c.send(http_request("/v1/traces", body))
        r = c.read_response()
    assert r.status == 200, f"{what}: a good request got {r}\n{tail(agent.log_path)}"
    assert r.body == b"", f"{what}: the empty response should have an empty body, got {r}"
