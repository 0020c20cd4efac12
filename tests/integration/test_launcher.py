"""Issue 4: the embedded agent. Host processes (launcher_host.py: Python, `import dlotel;
dlotel.start()`, the package under python/ over the built libdlotel.so) start one daemon per user
and host, attach to it, and detach from it; their telemetry goes through the daemon to an
upstream, which is a second, plain `dlotel agent` writing what it receives to a file.

Every test gets its own runtime directory (XDG_RUNTIME_DIR), state directory and ephemeral ports,
so tests never meet each other or a real agent, and a fixture kills whatever daemon a test left.
"""

import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import itlib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
PY_DIR = os.path.join(REPO, "python")
HOST = os.path.join(HERE, "launcher_host.py")
PYTHON = "/usr/bin/python3"
LINE_TIMEOUT = 30.0


def build_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(itlib.dlotel_bin())))


def libdlotel():
    path = os.path.join(build_dir(), "lib", "libdlotel.so")
    if not os.path.exists(path):
        raise AssertionError(f"{path} is missing: build the libdlotel target")
    return path


def sanitizer_preload():
    """An ASan build of libdlotel needs the sanitizer runtime in the (uninstrumented) Python that
    loads it: the dynamic runtime, preloaded. The launcher keeps it out of the daemon."""
    with open(libdlotel(), "rb") as f:
        if b"__asan_init" not in f.read():
            return None
    rt = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                        stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    assert os.path.exists(rt), f"ASan build, but no dynamic ASan runtime at {rt}"
    return rt


class Runtime:
    """One test's world: a runtime directory, a HOME, a state directory, and the environment a
    host process gets."""

    def __init__(self, root, upstream_url=None):
        self.root = str(root)
        self.xdg = os.path.join(self.root, "xdg")
        os.makedirs(self.xdg, mode=0o700)
        self.dir = os.path.join(self.xdg, "dlotel")
        self.sock = os.path.join(self.dir, "dlotel.sock")
        self.home = os.path.join(self.root, "home")
        os.makedirs(self.home)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "XDG_RUNTIME_DIR": self.xdg,
            "PYTHONPATH": PY_DIR,
            "PYTHONDONTWRITEBYTECODE": "1",
            "DLOTEL_LIBRARY": libdlotel(),
            "DATALAYER_OTEL_AGENT_GRPC_ENDPOINT": "127.0.0.1:0",
            "DATALAYER_OTEL_AGENT_HTTP_ENDPOINT": "127.0.0.1:0",
            "DATALAYER_OTEL_AGENT_ADMIN_ENDPOINT": "127.0.0.1:0",
            "DATALAYER_OTEL_AGENT_STATE_DIR": os.path.join(self.root, "state"),
            "DATALAYER_OTEL_DATA_DIR": os.path.join(self.root, "data"),
        }
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                self.env[k] = os.environ[k]
        rt = sanitizer_preload()
        if rt:
            self.env["LD_PRELOAD"] = rt
            # The interpreter's own allocations are not ours to check.
            self.env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        if upstream_url:
            self.env["DATALAYER_OTLP_URL"] = upstream_url
        self.hosts = []

    def host(self, options=None, env=None, wait=True):
        h = Host(self, options, env)
        self.hosts.append(h)
        if wait:
            h.started = h.read()
        return h

    def daemon_pid(self):
        """The pid in the daemon lock, if that process is alive and is our daemon."""
        try:
            with open(os.path.join(self.dir, "dlotel.lock")) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and is_daemon_of(pid, self.dir) else None

    def control(self, req, timeout=10.0):
        """One request on the control socket, spoken by hand: a 4-byte big-endian length, JSON."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock)
        try:
            payload = json.dumps(req).encode()
            s.sendall(struct.pack(">I", len(payload)) + payload)
            n = struct.unpack(">I", recv_exact(s, 4))[0]
            return json.loads(recv_exact(s, n))
        finally:
            s.close()

    def status(self):
        r = self.control({"op": "status"})
        assert r["ok"], r
        return r["status"]

    def cleanup(self):
        """Ends the hosts, stops the daemon the way `dlotel stop` does (so that a sanitizer
        build checks its exit too), and fails when the daemon's log reports a crash."""
        for h in self.hosts:
            h.kill()
        pid = self.daemon_pid()
        if pid:
            try:
                self.control({"op": "stop"})
            except OSError:
                pass
            if not wait_gone(pid, 20):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10)
        for name in ("dlotel.log.1", "dlotel.log"):
            log = itlib.tail(os.path.join(self.dir, name), 1 << 22)
            for marker in itlib.CRASH_MARKERS:
                if marker in log:
                    i = log.index(marker)
                    raise AssertionError(f"the daemon's {name} reports '{marker}':\n"
                                         f"{log[max(0, i - 2000):i + 4000]}")


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        d = s.recv(n - len(data))
        if not d:
            raise ConnectionError("control socket closed")
        data += d
    return data


def proc_state(pid):
    """(state letter, ppid) of |pid|, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def is_daemon_of(pid, rundir):
    st = proc_state(pid)
    return st is not None and st[0] != "Z" and rundir.encode() in cmdline(pid)


def daemons_of(rundir):
    """Live processes running as the daemon of |rundir|."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and is_daemon_of(int(d), rundir):
            out.append(int(d))
    return out


def wait_gone(pid, timeout):
    """Waits until |pid| is gone, or a zombie (whose reaping is its parent's business)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = proc_state(pid)
        if st is None or st[0] == "Z":
            return True
        time.sleep(0.02)
    return False


class Host:
    """A launcher_host.py process: one JSON line per command, with a timeout."""

    def __init__(self, rt, options=None, env=None):
        e = dict(rt.env)
        e.update(env or {})
        args = [PYTHON, HOST] + ([json.dumps(options)] if options else [])
        self.stderr_path = os.path.join(rt.root, f"host-{uuid.uuid4().hex[:8]}.err")
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, env=e, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, cwd=rt.root,
                                     preexec_fn=itlib._die_with_parent)
        self.lines = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        self.started = None

    def _reader(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, timeout=LINE_TIMEOUT):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"host {self.proc.pid} said nothing for {timeout}s; stderr:\n"
                                 f"{self.stderr()}")
        if line is None:
            raise AssertionError(f"host {self.proc.pid} exited ({self.proc.wait()}); stderr:\n"
                                 f"{self.stderr()}")
        return json.loads(line)

    def cmd(self, op, **kw):
        kw["op"] = op
        self.proc.stdin.write((json.dumps(kw) + "\n").encode())
        self.proc.stdin.flush()
        return self.read()

    def exit(self):
        r = self.cmd("exit")
        assert self.proc.wait(timeout=30) == 0, self.stderr()
        return r

    def stderr(self):
        self.err.flush()
        return itlib.tail(self.stderr_path, 6000)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.err.close()


@pytest.fixture
def upstream(tmp_path_factory):
    """A plain `dlotel agent` with a file exporter: what the daemon forwards lands in a file."""
    a = itlib.Agent(tmp_path_factory.mktemp("upstream")).start()
    try:
        yield a
    finally:
        if a.alive():
            a.stop()


@pytest.fixture
def rt(tmp_path, upstream):
    r = Runtime(tmp_path, upstream.http_url)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def bare_rt(tmp_path):
    """A runtime with no upstream configured."""
    r = Runtime(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


def spans_named(agent, name):
    out = []
    for req in agent.requests():
        for rs in req.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                out += [s for s in ss.get("spans", []) if s.get("name") == name]
    return out


def trace_ids(agent):
    ids = set()
    for req in agent.requests():
        for rs in req.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                ids.update(s.get("traceId", "").lower() for s in ss.get("spans", []))
    return ids


def wait_for(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# ---- the tests ----------------------------------------------------------------------------------

def test_start_from_python_spans_arrive_upstream(rt, upstream):
    h = rt.host()
    st = h.started
    assert st["ok"], st
    assert st["spawned"] is True
    pid = st["pid"]
    assert rt.daemon_pid() == pid
    # The daemon is not the host's child: the host has no child at all (the intermediate process
    # of the spawn was reaped) and will leave no zombie.
    assert h.cmd("children")["children"] == []
    # The runtime directory: private, a 0600 socket; the config file (secrets) is gone once read.
    assert stat.S_IMODE(os.stat(rt.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(rt.sock).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(rt.sock).st_mode)
    assert not os.path.exists(os.path.join(rt.dir, "dlotel.yaml"))
    # The library's log lines went to Python logging.
    assert "INFO dlotel: started the dlotel daemon" in h.stderr()

    name = f"launcher-it-{uuid.uuid4().hex[:8]}"
    assert h.cmd("send", name=name, trace_id=uuid.uuid4().hex)["http"] == 200
    assert h.cmd("flush", timeout=10)["ok"]
    # flush() returned: the upstream has it, no waiting needed.
    got = spans_named(upstream, name)
    assert len(got) == 1, upstream.requests()
    s = h.cmd("status")["status"]
    assert s["pid"] == pid and s["users"] == 1 and s["clients"] == [st["self"]]
    assert s["sent_items"] >= 1 and s["queue_depth"] == 0 and s["dropped"] == 0
    assert s["upstream_reachable"] is True and s["last_export_error"] is None
    assert h.exit()["ok"]
    # The host is gone; the daemon stays (no exit_when_unused) and nobody is attached.
    assert rt.daemon_pid() == pid
    wait_for(lambda: rt.status()["users"] == 0, what="the exited host to be detached")


def test_sixteen_processes_at_once_make_one_daemon(rt):
    hosts = [rt.host(wait=False) for _ in range(16)]
    results = [h.read() for h in hosts]
    for h, r in zip(hosts, results):
        assert r["ok"], (r, h.stderr())
    pids = {r["pid"] for r in results}
    assert len(pids) == 1, results
    assert sum(1 for r in results if r["spawned"]) == 1, results
    assert daemons_of(rt.dir) == [pids.pop()]
    st = rt.status()
    assert st["users"] == 16, st
    assert sorted(st["clients"]) == sorted(r["self"] for r in results)
    for h in hosts:
        h.exit()
    wait_for(lambda: rt.status()["users"] == 0, what="sixteen detaches")


def test_different_configuration_raises(rt):
    a = rt.host()
    assert a.started["ok"]
    b = rt.host(env={"DATALAYER_OTEL_AGENT_BATCH_TIMEOUT": "750ms"})
    r = b.started
    assert not r["ok"]
    assert r["type"] == "ConfigMismatchError", r
    assert r["code"] == -15
    assert "different configuration" in r["message"]
    assert str(a.started["pid"]) in r["message"]
    # The typed config is part of the configuration too.
    c = rt.host({"batch_timeout": 0.75})
    assert c.started["type"] == "ConfigMismatchError", c.started
    # The running daemon is untouched.
    assert rt.status()["users"] == 1
    # The same settings given another way hash the same: env and typed config agree.
    d = rt.host({"batch_timeout": "200ms"})
    assert d.started["ok"] and d.started["pid"] == a.started["pid"], d.started


def test_stop_by_one_user_keeps_the_daemon_for_the_other(rt, upstream):
    a = rt.host()
    b = rt.host()
    pid = a.started["pid"]
    assert b.started["pid"] == pid and not b.started["spawned"]
    assert rt.status()["users"] == 2
    assert a.cmd("stop")["ok"]
    assert rt.status()["users"] == 1
    assert rt.daemon_pid() == pid
    # b still works through it.
    name = f"after-stop-{uuid.uuid4().hex[:8]}"
    assert b.cmd("send", name=name, trace_id=uuid.uuid4().hex)["http"] == 200
    assert b.cmd("flush")["ok"]
    assert len(spans_named(upstream, name)) == 1
    # a's calls after stop say so.
    r = a.cmd("status")
    assert not r["ok"] and r["type"] == "ClosedError", r


def test_exit_when_unused_daemon_leaves_after_the_last_user(rt):
    opts = {"exit_when_unused": 0.3}
    a = rt.host(opts)
    b = rt.host(opts)
    pid = a.started["pid"]
    assert rt.status()["exit_when_unused_ms"] == 300
    a.cmd("stop")
    time.sleep(0.8)
    assert rt.daemon_pid() == pid, "the daemon left while a user was still attached"
    b.cmd("stop")
    assert wait_gone(pid, 10), "the daemon stayed after its last user left"
    assert not os.path.exists(rt.sock)
    # And the next start makes a new one.
    c = rt.host(opts)
    assert c.started["ok"] and c.started["spawned"] and c.started["pid"] != pid


def test_port_held_by_another_program_raises_and_leaves_no_daemon(rt):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    try:
        h = rt.host(env={"DATALAYER_OTEL_AGENT_HTTP_ENDPOINT": f"127.0.0.1:{port}"})
        r = h.started
        assert not r["ok"]
        assert r["type"] == "AddressInUseError", r
        assert r["code"] == -7
        assert f"port {port}" in r["message"] and "in use by another program" in r["message"], r
        assert "receivers.http_endpoint" in r["message"]
        time.sleep(0.2)
        assert daemons_of(rt.dir) == []
        assert not os.path.exists(rt.sock)
    finally:
        squatter.close()
    # With the port free again, the same start works.
    h2 = rt.host(env={"DATALAYER_OTEL_AGENT_HTTP_ENDPOINT": f"127.0.0.1:{port}"})
    assert h2.started["ok"], h2.started
    assert h2.started["http_port"] == port


def test_killed_daemon_is_replaced_by_the_next_start(rt, upstream):
    a = rt.host()
    old = a.started["pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_gone(old, 10)
    # The stale socket file is still there; nobody answers on it.
    assert os.path.exists(rt.sock)
    b = rt.host()
    assert b.started["ok"] and b.started["spawned"], b.started
    new = b.started["pid"]
    assert new != old
    # The first host notices its daemon is gone, and start() again attaches it to the new one.
    r = a.cmd("status")
    assert not r["ok"] and r["type"] == "ClosedError", r
    r = a.cmd("start")
    assert r["ok"] and r["pid"] == new and not r["spawned"], r
    assert rt.status()["users"] == 2
    name = f"replaced-{uuid.uuid4().hex[:8]}"
    assert a.cmd("send", name=name, trace_id=uuid.uuid4().hex)["http"] == 200
    assert a.cmd("flush")["ok"]
    assert len(spans_named(upstream, name)) == 1
    assert "removed the control socket" in b.stderr()


def test_host_exit_leaves_no_zombie(rt):
    h = rt.host()
    pid = h.started["pid"]
    host_pid = h.started["self"]
    assert h.cmd("children")["children"] == []
    state, ppid = proc_state(pid)
    assert ppid != host_pid, "the daemon is the host's child: it would become its zombie"
    h.exit()
    # The host is gone and reaped by us; the daemon runs on, not a zombie, not re-parented to
    # anything of ours.
    state, ppid = proc_state(pid)
    assert state != "Z"
    assert ppid not in (host_pid, os.getpid())
    r = rt.control({"op": "stop"})
    assert r["ok"]
    assert wait_gone(pid, 15)


PID1_HOST = r"""
import json, os, signal, sys, time
import dlotel

def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            t = f.read()
    except OSError:
        return None
    return t[t.rindex(")") + 2:].split()[0]

def zombies():
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and state(int(d)) == "Z":
            out.append(int(d))
    return out

def gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state(pid) is None:
            return True
        time.sleep(0.02)
    return False

res = {"self": os.getpid()}
a = dlotel.start()
res["first"] = a.pid
with open(f"/proc/{a.pid}/stat") as f:
    t = f.read()
res["first_ppid"] = int(t[t.rindex(")") + 2:].split()[1])
a.stop(daemon=True)
res["first_gone"] = gone(res["first"])
b = dlotel.start()
res["second"] = b.pid
os.kill(b.pid, signal.SIGKILL)
res["second_gone"] = gone(b.pid)
# A daemon that gives up at start (its port is taken) is reaped too.
import socket
sq = socket.socket()
sq.bind(("127.0.0.1", 0))
sq.listen(1)
try:
    dlotel.Agent(otlp_http_endpoint=f"127.0.0.1:{sq.getsockname()[1]}").start()
    res["third"] = "started?"
except dlotel.AddressInUseError as e:
    res["third"] = "refused"
deadline = time.monotonic() + 10
while zombies() and time.monotonic() < deadline:
    time.sleep(0.02)
res["zombies"] = zombies()
print(json.dumps(res), flush=True)
"""


def test_pid1_host_reaps_its_daemon(rt):
    """In a container the app may be PID 1: orphans are re-parented to it, and Python reaps no
    child it does not know. libdlotel must reap the daemon itself, however the daemon ends."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) to make a PID namespace")
    probe = subprocess.run([unshare, "--fork", "--pid", "--mount-proc", "true"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode()[-300:]}")
    p = subprocess.run([unshare, "--fork", "--pid", "--mount-proc", PYTHON, "-c", PID1_HOST],
                       env=rt.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                       cwd=rt.root)
    assert p.returncode == 0, p.stderr.decode()[-4000:]
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert res["self"] == 1, res
    assert res["first_ppid"] == 1, res  # Orphaned to the host, as in a container.
    assert res["first_gone"], res      # Stopped and reaped, not left a zombie.
    assert res["second_gone"], res     # Killed and reaped too.
    assert res["third"] == "refused", res
    assert res["zombies"] == [], res   # Including the one that gave up.


def test_disabled_by_otel_sdk_disabled(bare_rt):
    h = bare_rt.host(env={"OTEL_SDK_DISABLED": "true"})
    r = h.started
    assert r["ok"] and r["enabled"] is False and r["pid"] is None, r
    st = h.cmd("status")
    assert st == {"ok": True, "status": {"enabled": False}}
    assert daemons_of(bare_rt.dir) == []
    assert not os.path.exists(bare_rt.sock)


def test_nothing_configured_stores_in_the_sink(bare_rt):
    """#4 "done when": the example app with no upstream and no sink setting (the runtime only
    isolates ports and folders). start() falls back to the local sink instead of failing, and
    the app's spans are in the sink's Parquet files once the daemon stops."""
    reader = os.environ.get("DLOTEL_SINK_READER")
    if not reader:
        pytest.fail("DLOTEL_SINK_READER is not set (run through ctest)")
    app = os.path.join(REPO, "examples", "python-app", "app.py")
    p = subprocess.run([PYTHON, app, "--once", "3"], env=bare_rt.env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120, cwd=bare_rt.root)
    assert p.returncode == 0, p.stderr.decode()[-4000:]
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert len(res["traceIds"]) == 3
    pids = daemons_of(bare_rt.dir)
    assert len(pids) == 1, pids
    assert "libduckdb" in open(f"/proc/{pids[0]}/maps").read()
    os.kill(pids[0], signal.SIGTERM)   # the sink writes its hot rows to Parquet on the way out
    assert wait_gone(pids[0], 30)
    data = bare_rt.env["DATALAYER_OTEL_DATA_DIR"]
    q = subprocess.run([reader, data, f"SELECT DISTINCT trace_id FROM read_parquet("
                        f"'{data}/spans/*/*.parquet', hive_partitioning = true)"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert q.returncode == 0, q.stderr.decode()
    got = {json.loads(line)["trace_id"] for line in q.stdout.decode().splitlines() if line}
    assert set(t.lower() for t in res["traceIds"]) <= got, (res["traceIds"], got)


def test_agent_cli_with_nothing_configured_says_what_to_set(tmp_path):
    """The forwarding `dlotel agent` has no such fallback: it names what to set and exits 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATALAYER_", "OTEL_"))}
    env["HOME"] = str(tmp_path)
    p = subprocess.run([itlib.dlotel_bin(), "agent", "--grpc-endpoint", "127.0.0.1:0",
                        "--http-endpoint", "127.0.0.1:0", "--admin-endpoint", "127.0.0.1:0"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 2, p.stderr.decode()
    for var in ("DATALAYER_RUN_URL", "DATALAYER_API_KEY", "DATALAYER_OTLP_URL",
                "DATALAYER_OTEL_AGENT_SINK"):
        assert var in p.stderr.decode(), p.stderr.decode()


def test_bad_typed_option_names_the_key(rt):
    r = rt.host({"batch_timeout": "soon"}).started
    assert not r["ok"] and r["type"] == "ConfigError", r
    assert "batch.timeout" in r["message"], r
    r = rt.host({"settings": {"batch.timout": "1s"}}).started
    assert not r["ok"] and "did you mean" in r["message"], r
    assert daemons_of(rt.dir) == []


class Recorder(BaseHTTPRequestHandler):
    """An OTLP/HTTP upstream that records each request's path and headers and answers 200."""
    requests = []

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        Recorder.requests.append((self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_secrets_stay_out_of_argv_and_environment(tmp_path):
    Recorder.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    rt = Runtime(tmp_path, f"http://127.0.0.1:{srv.server_address[1]}")
    secret = "sk-" + uuid.uuid4().hex
    try:
        h = rt.host(env={"DATALAYER_API_KEY": secret})
        assert h.started["ok"], h.started
        pid = h.started["pid"]
        assert secret.encode() not in b"\0".join(cmdline(pid))
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
        assert secret.encode() not in environ
        assert b"DATALAYER_" not in environ
        assert h.cmd("send", name="secret-check", trace_id=uuid.uuid4().hex)["http"] == 200
        assert h.cmd("flush")["ok"]
        auth = [hd.get("Authorization") for path, hd in Recorder.requests if path == "/v1/traces"]
        assert auth == [f"Bearer {secret}"], Recorder.requests
        # Nothing readable by others in the runtime directory.
        for name in os.listdir(rt.dir):
            mode = stat.S_IMODE(os.stat(os.path.join(rt.dir, name)).st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))
    finally:
        rt.cleanup()
        srv.shutdown()


def test_daemon_log_is_capped(rt):
    """log.max_size rotates the daemon's log to dlotel.log.1: a chatty daemon (debug level, a
    detailed debug exporter) never grows it past the cap."""
    opts = {
        "exporters": {"dbg": {"_type": "debug", "verbosity": "detailed"}},
        "log_level": "debug",
        "log_max_size": "64KiB",
    }
    h = rt.host(opts)
    assert h.started["ok"], h.started
    for i in range(60):
        assert h.cmd("send", name=f"log-filler-{i}-" + "x" * 2000,
                     trace_id=uuid.uuid4().hex)["http"] == 200
    log = os.path.join(rt.dir, "dlotel.log")
    wait_for(lambda: os.path.exists(log + ".1"), what="the log to rotate")
    assert os.path.getsize(log) <= 64 * 1024
    assert os.path.getsize(log + ".1") <= 64 * 1024


def test_fork_child_attaches_on_its_own(rt):
    h = rt.host()
    r = h.cmd("fork")
    child = r["child"]
    assert child["ok"], child
    assert child["inherited_agent"] is False  # The inherited agent was dropped in the child.
    assert child["pid"] == h.started["pid"] and not child["spawned"]
    assert child["users"] == 2  # The parent, and the child on its own connection.
    # The child stopped and exited; the parent is still attached.
    assert h.cmd("status")["status"]["users"] == 1


def test_c_example_app(rt, upstream):
    exe = os.path.join(build_dir(), "examples", "dlotel-example-c")
    env = dict(rt.env)
    env.pop("LD_PRELOAD", None)  # An instrumented executable carries its own runtime.
    p = subprocess.run([exe], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60, cwd=rt.root)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    out = p.stdout.decode()
    assert "(started)" in out and "POST /v1/traces: HTTP 200" in out, out
    assert len(spans_named(upstream, "hello-from-c")) == 1
    # A second run attaches, then --stop-daemon stops it.
    pid = rt.daemon_pid()
    p = subprocess.run([exe, "--stop-daemon"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60, cwd=rt.root)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    assert "(attached)" in p.stdout.decode()
    assert wait_gone(pid, 15)
    assert len(spans_named(upstream, "hello-from-c")) == 2


def test_python_example_app(rt, upstream):
    """examples/python-app as a user runs it, without the OpenTelemetry SDK (not installable
    here): its stand-in posts OTLP/JSON spans through the daemon dlotel.start() made."""
    app = os.path.join(REPO, "examples", "python-app", "app.py")
    p = subprocess.run([PYTHON, app, "--once", "3"], env=rt.env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120, cwd=rt.root)
    assert p.returncode == 0, p.stderr.decode()[-4000:]
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert len(res["traceIds"]) == 3
    assert set(res["traceIds"]) <= trace_ids(upstream), (res, trace_ids(upstream))
    assert res["status"]["sent_items"] >= 3


def test_node_example_app(rt, upstream, node_modules):
    """examples/node-app: the OpenTelemetry JS SDK (traces, a counter, a histogram with explicit
    buckets, logs with trace context) exporting to the daemon a Python process started."""
    h = rt.host()
    port = h.started["http_port"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_PATH": node_modules,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    p = subprocess.run(["node", os.path.join(REPO, "examples", "node-app", "app.js"), "--once",
                        "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-4000:]
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert h.cmd("flush")["ok"]
    assert set(res["traceIds"]) <= trace_ids(upstream)
    reqs = upstream.requests()
    metrics = [m for r in reqs for rm in r.get("resourceMetrics", [])
               for sm in rm.get("scopeMetrics", []) for m in sm.get("metrics", [])]
    hist = [m for m in metrics if m["name"] == "app.request.duration"]
    assert hist, metrics
    bounds = [float(b) for b in hist[0]["histogram"]["dataPoints"][0]["explicitBounds"]]
    assert bounds == [1, 5, 10, 25, 50, 100, 250, 500, 1000]
    counter = [m for m in metrics if m["name"] == "app.requests"]
    assert counter and counter[0]["sum"]["isMonotonic"]
    logs = [lr for r in reqs for rl in r.get("resourceLogs", [])
            for sl in rl.get("scopeLogs", []) for lr in sl.get("logRecords", [])]
    assert len(logs) == 3
    assert {lr["traceId"].lower() for lr in logs} == set(res["traceIds"])


def test_pip_install_offline_and_run(tmp_path, upstream):
    """`pip install ./python` with Debian's python3, offline, into a venv; the installed package
    carries and runs its own daemon and library."""
    src = tmp_path / "src"
    shutil.copytree(PY_DIR, src, ignore=shutil.ignore_patterns("_bin", "build", "*.egg-info",
                                                               "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True,
                   timeout=120)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "DLOTEL_BUILD_DIR": build_dir(), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", str(src)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert p.returncode == 0, p.stdout.decode()[-4000:]
    rt = Runtime(tmp_path / "world", upstream.http_url)
    try:
        env = dict(rt.env)
        env.pop("PYTHONPATH")
        env.pop("DLOTEL_LIBRARY")
        code = ("import dlotel, json, os; a = dlotel.start(); "
                "print(json.dumps({'file': dlotel.__file__, 'pid': a.pid}))")
        p = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                           cwd=str(tmp_path))
        assert p.returncode == 0, p.stderr.decode()[-4000:]
        res = json.loads(p.stdout.decode().strip().splitlines()[-1])
        assert res["file"].startswith(str(venv)), res
        exe = cmdline(res["pid"])[0].decode()
        assert exe.startswith(str(venv)) and exe.endswith("/_bin/dlotel"), exe
        assert os.access(exe, os.X_OK)
    finally:
        rt.cleanup()


# ---- the installed package's sink: carried, used, and self-contained ----------------------------

SINK_FILES = ("dlotel", "libdlotel.so", "libdlotel_sink.so", "libduckdb.so")


@pytest.fixture(scope="module")
def sink_venv(tmp_path_factory):
    """`pip install ./python` (offline, Debian's python3, a --system-site-packages venv) from the
    build under test; returns (venv, the installed dlotel/_bin)."""
    root = tmp_path_factory.mktemp("pipsink")
    src = root / "src"
    shutil.copytree(PY_DIR, src, ignore=shutil.ignore_patterns("_bin", "build", "*.egg-info",
                                                               "__pycache__"))
    venv = root / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True,
                   timeout=120)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
           "DLOTEL_BUILD_DIR": build_dir(), "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", str(src)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert p.returncode == 0, p.stdout.decode()[-4000:]
    p = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import dlotel, os; print(os.path.dirname(dlotel.__file__))"],
                       env={"PATH": env["PATH"]}, cwd=str(root), stdout=subprocess.PIPE,
                       check=True, timeout=60)
    pkg = p.stdout.decode().strip()
    assert pkg.startswith(str(venv)), pkg
    return str(venv), os.path.join(pkg, "_bin")


def ldd(path):
    """{soname: resolved path} of |path|'s dependencies, as the dynamic loader resolves them."""
    out = subprocess.run(["ldd", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60).stdout
    deps = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (.*?) \(0x", line)
        if m:
            deps[m.group(1)] = m.group(2)
    return deps, out


def mapped_files(pid):
    with open(f"/proc/{pid}/maps") as f:
        return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}


def hide_prefix(paths, keep):
    """An argv prefix that runs a command in a private mount namespace where each of |paths| is
    an empty tmpfs: the build tree and DuckDB's bootstrap copy are simply not there. None when
    this machine allows no mount namespace (neither as root nor in a user namespace)."""
    hide = []
    for p in sorted({os.path.realpath(p) for p in paths}, key=len):
        if any(p == h or p.startswith(h + os.sep) for h in hide):
            continue
        if any(k == p or k.startswith(p + os.sep) for k in keep):
            continue  # Never hide the venv or the test's own files.
        hide.append(p)
    script = "set -e; " + "; ".join(
        f"mount -t tmpfs -o size=64k,mode=0755 dlotel-hidden {shlex.quote(p)}" for p in hide) + \
        '; exec "$@"'
    for ns in (["unshare", "--mount", "--propagation", "private"],
               ["unshare", "--mount", "--map-root-user", "--propagation", "private"]):
        prefix = ns + ["sh", "-c", script, "hide"]
        try:
            ok = subprocess.run(prefix + ["true"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=30).returncode == 0
        except OSError:
            ok = False
        if ok:
            return prefix, hide
    return None, hide


SINK_SCRIPT = r"""
import json, os, sys, time, urllib.request
import dlotel

trace_id, hidden = sys.argv[1], json.loads(sys.argv[2])
# The build tree is not there (or, without mount namespaces, at least not used).
seen = [p for p in hidden if os.listdir(p)]
a = dlotel.start(otlp_grpc_endpoint="127.0.0.1:0", otlp_http_endpoint="127.0.0.1:0",
                 admin_endpoint="127.0.0.1:0", settings={"api.port": 0})
now = time.time_ns()
body = {"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "pip-sink"}}]},
    "scopeSpans": [{"scope": {"name": "pip-test"}, "spans": [{
        "traceId": trace_id, "spanId": "00f067aa0ba902b7", "name": "from-the-wheel",
        "kind": 2, "startTimeUnixNano": str(now - 5000000), "endTimeUnixNano": str(now)}]}]}]}
req = urllib.request.Request(a.http_endpoint + "/v1/traces", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(req, timeout=30) as resp:
    http = resp.status
a.flush(10)
rows = dlotel.query("SELECT trace_id, span_name, service_name FROM spans WHERE trace_id = $1",
                    [trace_id])
st = a.status()
print(json.dumps({"pid": a.pid, "spawned": a.spawned, "http": http, "rows": list(rows),
                  "columns": rows.columns, "api_port": st.get("api_port"),
                  "http_port": a.http_port, "seen": seen,
                  "exporters": [[e["exporter"], e["kind"]] for e in st["exporters"]]}))
"""


def test_pip_package_carries_and_uses_the_sink(sink_venv, tmp_path):
    """The embedded default from an installed package: nothing configured (a fresh HOME and
    XDG_RUNTIME_DIR, no DATALAYER_* at all), dlotel.start() falls back to the local sink, a span
    sent over OTLP/HTTP to the daemon comes back from dlotel.query(). The daemon, the sink module
    and DuckDB all come from the venv, with the build tree hidden from the whole process tree."""
    venv, bindir = sink_venv
    for name in SINK_FILES:
        path = os.path.join(bindir, name)
        assert os.path.isfile(path) and not os.path.islink(path), path
        assert os.access(path, os.X_OK), path
    built = os.path.join(build_dir(), "lib", "libduckdb.so")
    if os.path.exists(built):  # The bootstrap's DuckDB: the package holds the file itself.
        assert os.path.getsize(os.path.join(bindir, "libduckdb.so")) == os.path.getsize(built)
    # The module finds DuckDB beside itself; the daemon does not link it at all.
    deps, out = ldd(os.path.join(bindir, "libdlotel_sink.so"))
    assert deps.get("libduckdb.so") == os.path.join(bindir, "libduckdb.so"), out
    assert "not found" not in out, out
    deps, out = ldd(os.path.join(bindir, "dlotel"))
    assert "not found" not in out and "duckdb" not in out, out

    rt = Runtime(tmp_path / "world")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": rt.home,
           "XDG_RUNTIME_DIR": rt.xdg, "PYTHONDONTWRITEBYTECODE": "1"}
    for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in rt.env:
            env[k] = rt.env[k]
    assert not any(k.startswith(("DATALAYER_", "OTEL_", "DLOTEL_")) for k in env), env
    script = tmp_path / "sink_app.py"
    script.write_text(SINK_SCRIPT)
    trace_id = uuid.uuid4().hex
    hidden_paths = [REPO, build_dir()]
    if os.path.exists(built):
        hidden_paths.append(os.path.dirname(os.path.realpath(built)))
    prefix, hidden = hide_prefix(hidden_paths, keep=[str(tmp_path), venv])
    if prefix is None:
        print(f"no mount namespace here: the build tree stays visible ({hidden})")
        prefix, hidden = [], []
    try:
        p = subprocess.run(prefix + [os.path.join(venv, "bin", "python"), str(script), trace_id,
                                     json.dumps(hidden)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                           cwd=str(tmp_path))
        log = itlib.tail(os.path.join(rt.dir, "dlotel.log"), 6000)
        assert p.returncode == 0, p.stderr.decode()[-4000:] + "\n--- daemon log:\n" + log
        res = json.loads(p.stdout.decode().strip().splitlines()[-1])
        assert res["seen"] == [], res  # The hidden directories really were empty.
        assert res["spawned"] and res["http"] == 200, res
        assert res["rows"] == [{"trace_id": trace_id, "span_name": "from-the-wheel",
                                "service_name": "pip-sink"}], res
        assert res["columns"] == ["trace_id", "span_name", "service_name"], res
        # api.port=0: an ephemeral port, which query() learnt from the daemon's status.
        assert res["api_port"] and res["api_port"] != 7800, res
        # Nothing configured: the sink is the one exporter, for every signal.
        assert res["exporters"] == [["sink", "sink"]] * 3, res
        pid = res["pid"]
        assert rt.daemon_pid() == pid
        exe = os.readlink(f"/proc/{pid}/exe")
        assert exe == os.path.join(bindir, "dlotel"), exe
        maps = mapped_files(pid)
        duck = {m for m in maps if "libduckdb" in m}
        assert duck == {os.path.join(bindir, "libduckdb.so")}, duck
        sink = {m for m in maps if "libdlotel_sink" in m}
        assert sink == {os.path.join(bindir, "libdlotel_sink.so")}, sink
        assert not any(m.startswith(os.path.realpath(build_dir()) + os.sep) for m in maps), maps
        # The data went where a fresh HOME puts it.
        assert os.path.isdir(os.path.join(rt.home, ".local", "share", "dlotel", "spans"))
    finally:
        rt.cleanup()


def test_pip_package_forwarding_daemon_never_maps_duckdb(sink_venv, tmp_path, upstream):
    """The footprint rule holds for the installed package: a daemon that forwards (an upstream
    is configured) never loads the sink module, so the 64 MB DuckDB it carries is not mapped."""
    venv, bindir = sink_venv
    rt = Runtime(tmp_path / "world", upstream.http_url)
    try:
        env = dict(rt.env)
        env.pop("PYTHONPATH")
        env.pop("DLOTEL_LIBRARY")
        trace_id = uuid.uuid4().hex
        code = ("import dlotel, json, sys, time, urllib.request\n"
                "a = dlotel.start()\n"
                "now = time.time_ns()\n"
                "body = {'resourceSpans': [{'scopeSpans': [{'spans': [{'traceId': sys.argv[1], "
                "'spanId': '00f067aa0ba902b7', 'name': 'forwarded-by-the-wheel', 'kind': 1, "
                "'startTimeUnixNano': str(now - 1000), 'endTimeUnixNano': str(now)}]}]}]}\n"
                "req = urllib.request.Request(a.http_endpoint + '/v1/traces', "
                "data=json.dumps(body).encode(), headers={'Content-Type': 'application/json'})\n"
                "assert urllib.request.urlopen(req, timeout=30).status == 200\n"
                "a.flush(10)\n"
                "print(json.dumps({'pid': a.pid, 'status': a.status()}))\n")
        p = subprocess.run([os.path.join(venv, "bin", "python"), "-c", code, trace_id], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                           cwd=str(tmp_path))
        assert p.returncode == 0, p.stderr.decode()[-4000:]
        res = json.loads(p.stdout.decode().strip().splitlines()[-1])
        assert trace_id in trace_ids(upstream)
        assert "api_port" not in res["status"], res
        pid = res["pid"]
        assert os.readlink(f"/proc/{pid}/exe") == os.path.join(bindir, "dlotel")
        maps = mapped_files(pid)
        assert not [m for m in maps if "duckdb" in m or "libdlotel_sink" in m], maps
    finally:
        rt.cleanup()


def test_cli_status_and_stop(rt):
    """`dlotel status` and `dlotel stop` find the daemon a Python process started."""
    h = rt.host()
    pid = h.started["pid"]
    env = {k: v for k, v in rt.env.items() if k != "LD_PRELOAD"}
    bin_ = itlib.dlotel_bin()

    def run(*args):
        return subprocess.run([bin_, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60)

    p = run("status", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["pid"] == pid and st["users"] == 1 and st["clients"] == [h.started["self"]]
    p = run("status")
    assert p.returncode == 0, p.stderr
    assert f"pid {pid}" in p.stdout and "processes attached: 1" in p.stdout, p.stdout
    assert f"otlp_http port {h.started['http_port']}" in p.stdout, p.stdout
    p = run("stop")
    assert p.returncode == 0 and "stopped" in p.stdout, p.stdout + p.stderr
    assert wait_gone(pid, 5)
    p = run("status")
    assert p.returncode == 1 and "no dlotel daemon" in p.stderr, p.stdout + p.stderr
    # The host hears of it on its next call.
    r = h.cmd("status")
    assert not r["ok"] and r["type"] == "ClosedError", r
