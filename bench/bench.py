#!/usr/bin/python3
"""dlotel benchmarks: the scenarios of docs/benchmarks.md, and the smoke mode ctest runs.

Every measured scenario pins the agent to one core (taskset -c 0) and the load generator and the
null upstream to the other (taskset -c 1), runs at least three times and reports medians:

  a   OTLP/HTTP in, nothing out                      saturation (closed loop)
  b   OTLP/HTTP in, OTLP/HTTP out: none, gzip, zstd   saturation, delivered == acknowledged
  c   OTLP/gRPC in, OTLP/gRPC out (none)              saturation, delivered == acknowledged
  h   p99 latency at half of saturation (a, b-none, c), open loop at a fixed rate
  d   a steady 10k spans/s (open loop): CPU % and RSS, for none, gzip and zstd upstream
  e   sink ingest: OTLP/HTTP into `sink_tool serve` (200 = committed), and the module alone
  f   sink queries over 10M spans: trace by id, count by service, /traces/ list, log search,
      timed through the module's query() (the SQL the REST API would run)
  g   agent start-up and idle RSS; dlotel.start() latency and idle RSS (Python launcher)
  i   the decode path: a processor chain makes the agent unpack and repack every request

Usage:
  bench/bench.py smoke --bin-dir BUILD/bin           every scenario at toy sizes; delivered == sent
  bench/bench.py run a b c h d --bin-dir BUILD/bin --runs 3 --out results.json
  bench/bench.py run all ...

Figures: items/s acknowledged by the agent (and delivered upstream, measured at the null
upstream), agent CPU-seconds per million items (utime+stime from /proc/PID/stat over the
measured window), peak RSS (VmHWM) and steady RSS (median VmRSS over the second half of the
window), and latency percentiles from the load generator (from the scheduled send time in open
loop). The smoke mode never judges speed.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


# `nice -n N` in front of every pinned process (--nice): on a shared machine a negative value
# keeps other people's builds from taking the measured cores (needs root or CAP_SYS_NICE).
PRIO = []


class Skip(Exception):
    """A scenario whose subject is not built yet (the sink, the Python launcher)."""


class Failure(Exception):
    """A scenario that ran and found something wrong (delivered != sent, a tool failed)."""


# ---- processes ------------------------------------------------------------------------------


def proc_cpu_s(pid):
    """utime + stime of |pid| (all its threads, live and exited) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_runq_wait_s(pid):
    """
    Seconds the threads of |pid| spent runnable but waiting for a CPU (/proc/PID/task/*/
    schedstat, second field): on a shared machine, the time other processes took from the
    agent's core. Threads that have exited are not counted.
    """
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total / 1e9


def proc_mem_kb(pid):
    """(VmRSS, VmHWM) of |pid| in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def proc_mem_detail_kb(pid):
    """{rss, anon, file, pss} of |pid| in KiB: RSS counts every shared-library page the process
    touched; PSS divides shared pages among the processes that map them; anon is its own."""
    d = {"rss": 0, "anon": 0, "file": 0, "pss": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                d["rss"] = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                d["anon"] = int(line.split()[1])
            elif line.startswith("RssFile:"):
                d["file"] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    d["pss"] = int(line.split()[1])
    except OSError:
        pass
    return d


class Sampler(threading.Thread):
    """Samples a process's CPU time and memory every |interval| seconds."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples = []  # (monotonic, cpu_s, rss_kb, hwm_kb)
        self.stop_ev = threading.Event()
        self.start()

    def sample(self):
        try:
            cpu = proc_cpu_s(self.pid)
            rss, hwm = proc_mem_kb(self.pid)
        except (OSError, ValueError, IndexError):
            return None
        s = (time.monotonic(), cpu, rss, hwm)
        self.samples.append(s)
        return s

    def run(self):
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join()

    def cpu_between(self, t0, t1):
        """CPU seconds used between monotonic times t0 and t1 (nearest samples)."""
        def at(t):
            best = min(self.samples, key=lambda s: abs(s[0] - t))
            return best
        a, b = at(t0), at(t1)
        wall = b[0] - a[0]
        return b[1] - a[1], wall

    def rss_steady_kb(self, t0, t1):
        xs = [s[2] for s in self.samples if (t0 + t1) / 2 <= s[0] <= t1]
        return statistics.median(xs) if xs else 0

    def hwm_kb(self):
        return max((s[3] for s in self.samples), default=0)


class Proc:
    def __init__(self, name, argv, core=None, env=None, log_dir=None, stdout=None, stdin=None):
        self.name = name
        if core is not None and shutil.which("taskset"):
            argv = PRIO + ["taskset", "-c", str(core)] + argv
        self.log_path = os.path.join(log_dir, name + ".log") if log_dir else os.devnull
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=stdout if stdout is not None else self.log,
                                  stderr=self.log, env=env, stdin=stdin)
        self.pid = self.p.pid  # taskset execs the program: same pid.

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""


def wait_json_file(path, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                try:
                    return json.load(f)
                except ValueError:
                    pass
        if not proc.alive():
            raise Failure(f"{proc.name} exited with {proc.p.returncode}:\n{proc.tail()}")
        time.sleep(0.002)
    raise Failure(f"{proc.name} did not write {path} within {timeout}s:\n{proc.tail()}")


def http_get_json(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the bench context ----------------------------------------------------------------------


class Ctx:
    def __init__(self, args):
        self.bin_dir = os.path.abspath(args.bin_dir)
        self.payloads = os.path.abspath(args.payloads)
        self.runs = getattr(args, "runs", 1)
        self.duration = getattr(args, "duration", 10.0)
        self.warmup = getattr(args, "warmup", 2.0)
        self.verbose = getattr(args, "verbose", False)
        self.keep = getattr(args, "keep", False)
        self.agent_core = getattr(args, "agent_core", "0")
        self.load_core = getattr(args, "load_core", "1")
        self.sink_cores = "0,1"  # e and f: the sink is measured on both cores.
        self.cases = getattr(args, "cases", None)
        # Smoke mode: every scenario's path with tiny loads and timings; nothing is judged.
        self.smoke = False
        self.tmp = tempfile.mkdtemp(prefix="dlotel-bench-")
        self.loadgen = os.path.join(self.bin_dir, "dlotel-loadgen")
        self.nullup = os.path.join(self.bin_dir, "dlotel-nullup")
        self.dlotel = getattr(args, "dlotel", None) or os.path.join(self.bin_dir, "dlotel")
        self.seq = 0
        # The agent talks to loopback only: no proxy may get in the way.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.lower().endswith("_proxy") and not k.startswith("DATALAYER_")
                    and not k.startswith("OTEL_")}
        self.env["NO_PROXY"] = "*"
        self.env["no_proxy"] = "*"
        self.base_env = dict(self.env)
        # --variant NAME=PATH[,VAR=VALUE...]: agents to compare side by side in every round.
        self.variants = [("", self.dlotel, {})]
        specs = getattr(args, "variant", None) or []
        if specs:
            self.variants = []
            for spec in specs:
                name, _, rest = spec.partition("=")
                parts = rest.split(",")
                venv = dict(x.split("=", 1) for x in parts[1:] if "=" in x)
                self.variants.append((name, os.path.abspath(parts[0]), venv))
        for tool in (self.loadgen, self.nullup):
            if not os.access(tool, os.X_OK):
                raise SystemExit(f"bench: {tool} is not built "
                                 f"(cmake --build BUILD --target bench-tools)")

    def payload(self, name):
        return os.path.join(self.payloads, name)

    def dir(self, name):
        self.seq += 1
        d = os.path.join(self.tmp, f"{self.seq:03d}-{name}")
        os.makedirs(d)
        return d

    def log(self, msg):
        print(msg, file=sys.stderr, flush=True)

    def cleanup(self):
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_nullup(ctx, d, core=None, count="fast"):
    ready = os.path.join(d, "nullup.json")
    p = Proc("nullup", [ctx.nullup, "--ready-file", ready, "--count", count], core=core,
             log_dir=d)
    info = wait_json_file(ready, p)
    return p, info["port"]


def nullup_stats(port):
    return http_get_json(f"http://127.0.0.1:{port}/stats")


def agent_yaml(exporters, routes=None, batch=None, sink=None, extra=None):
    """A YAML configuration for the agent (see docs/configuration.md)."""
    lines = []
    if batch:
        lines.append("batch:")
        for k, v in batch.items():
            lines.append(f"  {k}: {v}")
    if exporters:
        lines.append("exporters:")
        for name, e in exporters.items():
            lines.append(f"  {name}:")
            for k, v in e.items():
                if isinstance(v, dict):
                    lines.append(f"    {k}:")
                    for k2, v2 in v.items():
                        lines.append(f"      {k2}: {v2}")
                else:
                    lines.append(f"    {k}: {v}")
    for sig, names in (routes or {}).items():
        lines.append(f"exporters_{sig}: [{', '.join(names)}]")
    if sink:
        lines.append("sink:")
        for k, v in sink.items():
            lines.append(f"  {k}: {v}")
    for k, v in (extra or {}).items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n"


def start_agent(ctx, d, yaml_text, core=None, extra_args=(), timeout=20, wrapper=()):
    """Starts `dlotel agent` on free ports; returns (proc, ready-file JSON)."""
    if not os.access(ctx.dlotel, os.X_OK):
        raise Skip(f"{ctx.dlotel} is not built")
    cfg = os.path.join(d, "agent.yaml")
    with open(cfg, "w") as f:
        f.write(yaml_text)
    ready = os.path.join(d, "agent.json")
    env = dict(ctx.env)
    env["DATALAYER_OTEL_AGENT_STATE_DIR"] = os.path.join(d, "state")
    argv = [ctx.dlotel, "agent", "--config", cfg, "--grpc-endpoint", "127.0.0.1:0",
            "--http-endpoint", "127.0.0.1:0", "--admin-endpoint", "127.0.0.1:0",
            "--ready-file", ready, "--log-level", "warn",
            *extra_args]
    p = Proc("agent", [*wrapper, *argv], core=core, env=env, log_dir=d)
    return p, wait_json_file(ready, p, timeout)


def run_loadgen(ctx, target, payload, proto="http", core=None, extra=(), check=True,
                timeout=None):
    argv = [ctx.loadgen, "--target", target, "--payload", payload, "--proto", proto, "--json",
            "--quiet", *[str(x) for x in extra]]
    if core is not None:
        argv = PRIO + ["taskset", "-c", str(core)] + argv
    if ctx.verbose:
        ctx.log("  $ " + " ".join(argv))
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        raise Failure(f"loadgen failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    if check and out["total"]["ok"] == 0:
        raise Failure(f"loadgen: nothing acknowledged: {out}")
    return out


def wait_delivered(port, want_items, timeout=20.0, settle=1.0):
    """Waits until the null upstream has |want_items| items (or stops changing). Returns stats."""
    deadline = time.monotonic() + timeout
    last, last_change = None, time.monotonic()
    while True:
        st = nullup_stats(port)
        if st["items"] >= want_items:
            return st
        if st["items"] != last:
            last, last_change = st["items"], time.monotonic()
        if time.monotonic() - last_change > max(settle, 5.0) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


# ---- rigs: a null upstream and an agent -------------------------------------------------------

PAYLOAD_TRACES = "traces_512.pb"
# Open loop: enough connections that a request never waits for a free one unless the agent is
# behind (HTTP/1.1 without pipelining, as SDK exporters send; gRPC multiplexes streams).
HTTP_CONNS = ["--connections", 32, "--depth", 1]
GRPC_CONNS = ["--connections", 4, "--depth", 16]
# Closed loop: fewer, so that the generator's own queueing stays small.
HTTP_CLOSED = ["--connections", 16, "--depth", 1]
GRPC_CLOSED = ["--connections", 4, "--depth", 4]


def conns_for(proto, closed=False):
    if closed:
        return HTTP_CLOSED if proto == "http" else GRPC_CLOSED
    return HTTP_CONNS if proto == "http" else GRPC_CONNS


BIG_QUEUE = "1GiB"


def forward_config(out_proto, compression, nullup_port, disk_queue=False, big_queue=False):
    """
    An agent that forwards everything to the null upstream over |out_proto|. |big_queue| raises
    the memory queues from 64 MiB shared / 16 MiB per exporter to 1 GiB, so that a scheduling
    hiccup of the shared machine (the 16 MiB exporter queue holds about 100 ms at 1M spans/s)
    does not count as the agent being too slow: the capacity search measures throughput.
    """
    if out_proto is None:
        # "Nothing out": an exporter that no signal is routed to, so the pipeline drops.
        return agent_yaml({"void": {"type": "debug"}},
                          routes={"traces": [], "metrics": [], "logs": []})
    e = {
        "type": "otlp_http" if out_proto == "http" else "otlp_grpc",
        "endpoint": f"http://127.0.0.1:{nullup_port}",
        "compression": compression,
        "disk_queue": {"enabled": "true" if disk_queue else "false"},
    }
    if big_queue:
        e["memory_queue_max_bytes"] = BIG_QUEUE
        return agent_yaml({"up": e}, extra={"queue": f"{{memory_max_bytes: {BIG_QUEUE}}}"})
    return agent_yaml({"up": e})


class Rig:
    """A null upstream on the load core and an agent on its own core, forwarding to it."""

    def __init__(self, ctx, name, in_proto="http", out_proto=None, compression="none",
                 disk_queue=False, big_queue=False, agent_args=()):
        self.ctx = ctx
        self.name = name
        self.in_proto = in_proto
        self.out_proto = out_proto
        self.dir = ctx.dir(name)
        self.acked = 0
        # Items of requests the load generator stopped waiting for (its window ended, or its
        # request timeout passed): the agent may still accept and forward them.
        self.unanswered = 0
        self.agent = None
        self.nu, self.nport = start_nullup(ctx, self.dir, core=ctx.load_core)
        try:
            self.agent, ready = start_agent(
                ctx, self.dir, forward_config(out_proto, compression, self.nport, disk_queue,
                                              big_queue), core=ctx.agent_core,
                extra_args=agent_args)
        except BaseException:
            self.nu.stop()
            raise
        self.port = ready["grpc_port"] if in_proto == "grpc" else ready["http_port"]

    def settle(self, timeout=120.0):
        """Waits for everything acknowledged so far to reach the null upstream."""
        if self.out_proto is None:
            return None
        st = wait_delivered(self.nport, self.acked, timeout=timeout)
        return st["items"]

    def drive(self, extra, duration, warmup, payload=None, verify=True):
        """Runs the load generator once; returns the figures of the measured window."""
        ctx = self.ctx
        sampler = Sampler(self.agent.pid)
        result = {}
        args = ["--duration", duration, "--warmup", warmup, *extra]

        def load():
            try:
                result["lg"] = run_loadgen(ctx, f"127.0.0.1:{self.port}",
                                           ctx.payload(payload or PAYLOAD_TRACES),
                                           proto=self.in_proto, core=ctx.load_core, extra=args,
                                           check=False)
            except Failure as e:
                result["err"] = e

        th = threading.Thread(target=load)
        th.start()
        time.sleep(warmup)
        t0 = time.monotonic()
        s0 = nullup_stats(self.nport)
        w0 = proc_runq_wait_s(self.agent.pid)
        time.sleep(duration)
        t1 = time.monotonic()
        s1 = nullup_stats(self.nport)
        w1 = proc_runq_wait_s(self.agent.pid)
        th.join()
        if "err" in result:
            sampler.stop()
            raise result["err"]
        lg = result["lg"]
        sampler.sample()
        sampler.stop()
        mem = proc_mem_detail_kb(self.agent.pid)
        self.acked += lg["total"]["ok_items"]
        # Requests that failed without an answer (the generator's timeout) may also arrive.
        st = lg["http_status"] if self.in_proto == "http" else lg["grpc_status"]
        answered_not_ok = sum(v for k, v in st.items() if k not in ("200", "0"))
        timed_out = max(0, lg["total"]["failed"] - answered_not_ok)
        self.unanswered += (lg["total"]["incomplete"] + timed_out) * lg["items_per_request"]
        delivered = self.settle()
        cpu, wall = sampler.cpu_between(t0, t1)
        w = lg["window"]
        tot = lg["total"]
        sent = tot["ok"] + tot["failed"]
        run = {
            "items_per_s": w["items_per_s"],
            "requests_per_s": w["requests_per_s"],
            "delivered_items_per_s":
                (s1["items"] - s0["items"]) / (t1 - t0) if self.out_proto else None,
            "cpu_s_per_m_items": cpu / (w["items"] / 1e6) if w["items"] else None,
            "cpu_pct": 100.0 * cpu / wall if wall > 0 else None,
            "rss_peak_mib": sampler.hwm_kb() / 1024.0,
            "rss_steady_mib": sampler.rss_steady_kb(t0, t1) / 1024.0,
            "rss_anon_mib": mem["anon"] / 1024.0,
            "pss_mib": mem["pss"] / 1024.0,
            "p50_us": lg["latency_us"]["p50"],
            "p99_us": lg["latency_us"]["p99"],
            "p999_us": lg["latency_us"]["p999"],
            "shed_pct": 100.0 * tot["failed"] / sent if sent else 0.0,
            "runq_wait_pct": 100.0 * (w1 - w0) / (t1 - t0),
            "failed": tot["failed"],
            "incomplete": tot["incomplete"] + tot["missed"],
            "acknowledged_items": self.acked,
            "delivered_items": delivered,
            "loadgen_cpu_pct": 100.0 * lg["loadgen_cpu_s"] / tot["elapsed_s"],
            "status": lg["http_status"] if self.in_proto == "http" else lg["grpc_status"],
        }
        # Every acknowledged item must arrive; beyond them, only items of requests left without
        # an answer may (the agent took them after the generator stopped waiting).
        if self.out_proto and verify and not (
                self.acked <= delivered <= self.acked + self.unanswered):
            raise Failure(f"{self.name}: the null upstream received {delivered} items, but the "
                          f"agent acknowledged {self.acked} (and {self.unanswered} more were "
                          f"sent without an answer)")
        if not self.agent.alive():
            raise Failure(f"{self.name}: the agent died:\n{self.agent.tail()}")
        return run

    def stop(self):
        if self.agent is not None:
            rc = self.agent.stop()
            if rc != 0:
                self.ctx.log(f"[{self.name}] agent exited with {rc}: {self.agent.tail(5)}")
        self.nu.stop()


def with_rig(ctx, name, fn, **kw):
    rig = Rig(ctx, name, **kw)
    try:
        return fn(rig)
    finally:
        rig.stop()


def probe_ok(run):
    """
    An open-loop probe the agent kept up with: (almost) nothing shed, no backlog in front of the
    receiver (p99 latency), and delivery upstream as fast as acceptance (no backlog behind it).
    """
    delivered_ok = (run["delivered_items_per_s"] is None or
                    run["delivered_items_per_s"] >= 0.97 * run["items_per_s"])
    return (run["shed_pct"] <= 0.5 and run["incomplete"] == 0 and run["p99_us"] <= 50_000
            and delivered_ok)


def find_capacity(ctx, name, in_proto, out_proto, compression, probe_s=3.0, start_rps=1000.0,
                  max_rps=16000.0, agent_args=()):
    """
    The forwarding capacity: the highest open-loop request rate (512-span requests at fixed
    intervals) that the agent keeps up with (probe_ok), found by doubling then bisecting to
    within 8%. A closed loop cannot measure this: the agent answers 429 at once when its queue
    is full, so a closed loop measures how fast it can refuse.
    """
    probes = []

    def search(rig):
        lo, hi, r = 0.0, None, start_rps
        while True:
            run = rig.drive(["--rate", f"{r:.1f}", *conns_for(in_proto)], probe_s,
                            0.1 if ctx.smoke else 1.0)
            ok = probe_ok(run)
            probes.append({"rps": r, "ok": ok, "shed_pct": run["shed_pct"],
                           "p99_us": run["p99_us"], "cpu_pct": run["cpu_pct"]})
            if ok:
                lo = r
            else:
                hi = r
            if hi is None:
                if r >= max_rps:
                    break
                r = min(r * 2, max_rps)
            else:
                if hi - lo <= 0.08 * hi:
                    break
                r = (lo + hi) / 2
        return lo

    if ctx.smoke:
        probe_s, start_rps, max_rps = 0.3, 20.0, 40.0
    lo = with_rig(ctx, name + "-search", search, in_proto=in_proto, out_proto=out_proto,
                  compression=compression, big_queue=True, agent_args=agent_args)
    ctx.log(f"[{name}]   capacity {lo:.0f} req/s; probes: " +
            ", ".join(f"{p['rps']:.0f}{'+' if p['ok'] else '-'}" for p in probes))
    return lo, probes


# ---- scenarios ------------------------------------------------------------------------------
#
# A scenario is a list of cases; a case runs once per round and returns {row label: figures}.
# Rounds are interleaved (round 1 of every case, then round 2, ...), so a machine that slows
# down while others build on it slows every case alike, and ratios stay fair.

KEYS = ["items_per_s", "delivered_items_per_s", "cpu_s_per_m_items", "cpu_pct", "rss_peak_mib",
        "rss_steady_mib", "rss_anon_mib", "pss_mib", "p50_us", "p99_us", "p999_us", "shed_pct",
        "loadgen_cpu_pct",
        "capacity_items_per_s", "rate_items_per_s", "scan_us", "runq_wait_pct", "loadavg_1m"]


def median_of(runs):
    med = {}
    for k in KEYS:
        xs = [r[k] for r in runs if r.get(k) is not None]
        if xs:
            med[k] = statistics.median(xs)
            med[k + "_min"] = min(xs)
            med[k + "_max"] = max(xs)
    med["runs"] = len(runs)
    return med


def machine_speed(ctx):
    """otlp_scan() microseconds per 512-span request right now: how fast the machine is."""
    micro = os.path.join(ctx.bin_dir, "dlotel-micro")
    if ctx.smoke or not os.access(micro, os.X_OK):
        return None
    cmd = [micro, "--seconds", "0.3", "--op", "otlp_scan", "--json",
           ctx.payload(PAYLOAD_TRACES)]
    if ctx.agent_core is not None:
        cmd = ["taskset", "-c", str(ctx.agent_core)] + cmd
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        return next(x["us_per_request"] for x in json.loads(r.stdout) if x["op"] == "otlp_scan")
    except (ValueError, StopIteration):
        return None


def run_cases(ctx, cases):
    """
    Runs |cases| (name, fn) for ctx.runs interleaved rounds, each with every --variant of the
    agent (A/B comparisons side by side); returns aggregated rows.
    """
    rows = {}
    order = []
    if ctx.cases:
        cases = [c for c in cases if re.search(ctx.cases, c[0])]
    for rnd in range(ctx.runs):
        for (name, fn), (vname, vpath, venv) in [(c, v) for c in cases for v in ctx.variants]:
            ctx.dlotel = vpath
            ctx.env = {**ctx.base_env, **venv}
            speed = machine_speed(ctx)
            ctx.log(f"[{name}{' ' + vname if vname else ''}] round {rnd + 1}/{ctx.runs} "
                    f"(otlp_scan {speed} us/request now)")
            for label, run in fn().items():
                run["loadavg_1m"] = os.getloadavg()[0]
                if vname:
                    label = f"{label} [{vname}]"
                run["scan_us"] = speed
                if label not in rows:
                    rows[label] = []
                    order.append(label)
                rows[label].append(run)
                ctx.log(f"[{label}]   {fmt(run.get('items_per_s'))} items/s acked, "
                        f"cpu {fmt(run.get('cpu_pct'))}% (waited "
                        f"{fmt(run.get('runq_wait_pct'))}%), shed {fmt(run.get('shed_pct'))}%, "
                        f"p50/p99 {fmt(run.get('p50_us'))}/{fmt(run.get('p99_us'))} us, rss "
                        f"{fmt(run.get('rss_steady_mib'))}/{fmt(run.get('rss_peak_mib'))} MiB, "
                        f"load {run['loadavg_1m']:.2f}")
    return [{"label": lab, "runs": rows[lab], "median": median_of(rows[lab])} for lab in order]


def latency_floor(ctx, items_per_s):
    """
    The same open-loop load sent to the null upstream on the agent's core instead of the agent:
    the same HTTP server code and loopback path, but no validation, no pipeline and no exporter.
    What is left of the latency is the machine's (scheduling, loopback copies, the generator).
    """
    d = ctx.dir("floor")
    nu, nport = start_nullup(ctx, d, core=ctx.agent_core)
    try:
        sampler = Sampler(nu.pid)
        t0 = time.monotonic()
        lg = run_loadgen(ctx, f"127.0.0.1:{nport}", ctx.payload(PAYLOAD_TRACES),
                         core=ctx.load_core,
                         extra=["--items-rate", f"{items_per_s:.0f}", *HTTP_CONNS,
                                "--duration", ctx.duration, "--warmup", ctx.warmup])
        sampler.sample()
        sampler.stop()
        t1 = time.monotonic()
        cpu, wall = sampler.cpu_between(t0 + ctx.warmup, t1)
        w = lg["window"]
        return {"items_per_s": w["items_per_s"], "delivered_items_per_s": None,
                "cpu_s_per_m_items": cpu / (w["items"] / 1e6) if w["items"] else None,
                "cpu_pct": 100.0 * cpu / wall if wall > 0 else None,
                "rss_peak_mib": sampler.hwm_kb() / 1024, "rss_steady_mib":
                sampler.rss_steady_kb(t0, t1) / 1024, "p50_us": lg["latency_us"]["p50"],
                "p99_us": lg["latency_us"]["p99"], "p999_us": lg["latency_us"]["p999"],
                "shed_pct": 0.0, "failed": lg["total"]["failed"], "rate_items_per_s": items_per_s,
                "loadgen_cpu_pct": 100.0 * lg["loadgen_cpu_s"] / lg["total"]["elapsed_s"]}
    finally:
        nu.stop()


def case_nothing_out(ctx):
    """(a) OTLP/HTTP in, nothing out: closed-loop saturation, then open loop at half of it."""
    def fn():
        sat = with_rig(ctx, "a", lambda rig: rig.drive(
            HTTP_CLOSED, ctx.duration, ctx.warmup), in_proto="http")
        half_items = sat["items_per_s"] / 2
        half = with_rig(ctx, "a-half", lambda rig: rig.drive(
            ["--items-rate", f"{half_items:.0f}", *HTTP_CONNS], ctx.duration, ctx.warmup),
            in_proto="http")
        half["rate_items_per_s"] = half_items
        floor = latency_floor(ctx, half_items)
        return {"a http-in, nothing out: saturation (closed loop)": sat,
                "h a at half saturation (open loop)": half,
                "h floor: the null upstream alone on the agent's core, same rate": floor}
    return ("a", fn)


def case_forward(ctx, tag, in_proto, out_proto, compression, half=False, agent_args=(),
                 what=""):
    """(b)/(c): capacity search, a measured run at capacity and, if asked, at half of it."""
    base = f"{tag} {in_proto}-in {out_proto}-out {compression}{what}"

    def fn():
        rps, probes = find_capacity(ctx, f"{tag}-{compression}", in_proto, out_proto,
                                    compression, agent_args=agent_args)
        out = {}
        if rps <= 0:
            ctx.log(f"[{base}] no rate passed; skipping the measured run")
            return out
        kw = dict(in_proto=in_proto, out_proto=out_proto, compression=compression,
                  big_queue=True, agent_args=agent_args)
        at = with_rig(ctx, f"{tag}-{compression}-cap", lambda rig: rig.drive(
            ["--rate", f"{rps:.1f}", *conns_for(in_proto)], ctx.duration, ctx.warmup), **kw)
        at["capacity_items_per_s"] = rps * 512
        at["rate_items_per_s"] = rps * 512
        at["probes"] = probes
        out[f"{base}: at capacity (open loop)"] = at
        if half:
            h = with_rig(ctx, f"{tag}-{compression}-half", lambda rig: rig.drive(
                ["--rate", f"{rps / 2:.1f}", *conns_for(in_proto)], ctx.duration, ctx.warmup),
                **kw)
            h["rate_items_per_s"] = rps * 512 / 2
            out[f"h {tag} {compression} at half capacity (open loop)"] = h
        return out
    return (f"{tag}-{compression}", fn)


def case_overload(ctx, tag, in_proto, out_proto, compression):
    """A closed loop that ignores 429: how much the agent still forwards while refusing."""
    def fn():
        r = with_rig(ctx, f"{tag}-overload", lambda rig: rig.drive(
            conns_for(in_proto, closed=True), ctx.duration, ctx.warmup), in_proto=in_proto,
            out_proto=out_proto, compression=compression)
        return {f"{tag} {in_proto}-in {out_proto}-out {compression}: overload (closed loop, "
                f"429 ignored)": r}
    return (f"{tag}-overload", fn)


def case_steady(ctx, compression, disk_queue=False, duration=None, agent_args=(), tag="d",
                what=""):
    """(d) a steady 10k spans/s: CPU % and RSS."""
    dur = duration or (1.0 if ctx.smoke else max(ctx.duration * 3, 30.0))
    label = (f"{tag} 10k spans/s, http-out {compression}" + (", disk queue" if disk_queue else "")
             + what)

    def fn():
        r = with_rig(ctx, f"{tag}-{compression}{'-disk' if disk_queue else ''}",
                     lambda rig: rig.drive(["--items-rate", 10000, "--connections", 2], dur,
                                           ctx.warmup),
                     in_proto="http", out_proto="http", compression=compression,
                     disk_queue=disk_queue, agent_args=agent_args)
        r["rate_items_per_s"] = 10000
        return {label: r}
    return (label, fn)


def scenario_a(ctx, res):
    res.extend(run_cases(ctx, [case_nothing_out(ctx)]))


def scenario_b(ctx, res):
    # The smoke mode leaves out the compressed capacity searches (the same code with another
    # argument; the smoke test's agent part and d's disk-queue case forward gzip and zstd).
    res.extend(run_cases(ctx, [case_forward(ctx, "b", "http", "http", "none", half=True)] +
                         ([] if ctx.smoke else
                          [case_forward(ctx, "b", "http", "http", "gzip"),
                           case_forward(ctx, "b", "http", "http", "zstd")]) +
                         [case_overload(ctx, "b", "http", "http", "none")]))


def scenario_c(ctx, res):
    res.extend(run_cases(ctx, [case_forward(ctx, "c", "grpc", "grpc", "none", half=True)]))


def scenario_h(ctx, res):
    ctx.log("[h] p99 at half saturation is measured by a, b (none) and c in the same rounds")


def scenario_d(ctx, res):
    res.extend(run_cases(ctx, [case_steady(ctx, "none")] +
                         ([] if ctx.smoke else
                          [case_steady(ctx, "gzip"), case_steady(ctx, "zstd")]) +
                         [case_steady(ctx, "gzip", disk_queue=True)]))


def scenario_ab(ctx, res):
    """
    The set for comparing agent builds with --variant, where the receive path matters: a, b and
    c uncompressed (with their half-capacity latency rows) and d uncompressed.
    """
    res.extend(run_cases(ctx, [case_nothing_out(ctx),
                               case_forward(ctx, "b", "http", "http", "none", half=True),
                               case_forward(ctx, "c", "grpc", "grpc", "none", half=True),
                               case_steady(ctx, "none")]))


# (i) The decode path: a processor chain makes the agent unpack, rewrite and repack every
# request (agent/processor/, in progress); one attribute upsert, the cheapest rewrite.
DECODE_CHAIN = ('[{"kind":"attributes","actions":[{"key":"bench.decoded","action":"upsert",'
                '"value":"1"}]}]')


def scenario_i(ctx, res):
    if not os.access(ctx.dlotel, os.X_OK):
        raise Skip(f"{ctx.dlotel} is not built")
    r = subprocess.run([ctx.dlotel, "agent", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=ctx.env)
    if b"--processors-traces" not in r.stdout:
        raise Skip("this agent has no processors (--processors-traces) yet")
    args = ("--processors-traces", DECODE_CHAIN)
    what = ", decode path (one attribute upsert)"
    try:
        res.extend(run_cases(ctx, [
            case_forward(ctx, "i", "http", "http", "none", agent_args=args, what=what),
            case_steady(ctx, "none", agent_args=args, tag="i", what=what)]))
    except Failure as e:
        if "processor" in str(e):
            raise Skip(f"the agent refuses the processor chain: {str(e).splitlines()[-1]}")
        raise


# ---- the sink: ingest (e) and queries (f) ------------------------------------------------------
#
# The REST API that will serve /traces/ and /logs/ is being built, so e and f drive the sink the
# way the daemon does, through tests/sink_tool.c's `serve` (the daemon's receivers and pipeline
# with the sink exporter loading lib/libdlotel_sink.so; an OTLP 200 means the rows are
# committed), and time the SQL the API would run through the module's query() on its stdin.


def sink_tool_path(ctx):
    p = os.path.join(ctx.bin_dir, "sink_tool")
    lib = os.path.join(os.path.dirname(ctx.bin_dir), "lib", "libdlotel_sink.so")
    if not os.access(p, os.X_OK):
        raise Skip(f"{p} is not built (cmake --build BUILD --target sink_tool)")
    if not os.path.exists(lib):
        raise Skip(f"{lib} is not built (cmake --build BUILD --target dlotel_sink)")
    return p


# The payloads are dated 2026-01-01: with the default 30-day retention, maintenance would drop
# them during a long load.
SINK_OPTS = ("--retention-days", "0")


class SinkServe:
    """`sink_tool DATA serve`: OTLP in, committed rows acknowledged, SQL on stdin."""

    def __init__(self, ctx, d, data_dir, core=None, opts=SINK_OPTS, timeout=120):
        ready = os.path.join(d, "serve.json")
        argv = [sink_tool_path(ctx), *[str(x) for x in opts], data_dir, "serve",
                "--ready-file", ready]
        self.p = Proc("sink_tool", argv, core=core, env=ctx.env, log_dir=d,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.p.pid
        try:
            info = wait_json_file(ready, self.p, timeout)
        except BaseException:
            self.p.stop()
            raise
        self.http_port = info["http_port"]
        self.grpc_port = info["grpc_port"]

    def command(self, line):
        """One command ("query SQL", "flush", "stats"); returns (milliseconds, JSON answer)."""
        if "\n" in line:
            raise ValueError("one line per command")
        t = time.perf_counter()
        self.p.p.stdin.write(line.encode() + b"\n")
        self.p.p.stdin.flush()
        out = self.p.p.stdout.readline()
        ms = (time.perf_counter() - t) * 1000
        if not out:
            raise Failure(f"sink_tool serve died:\n{self.p.tail()}")
        return ms, json.loads(out)

    def query(self, sql):
        ms, ans = self.command("query " + " ".join(sql.split()))
        if not ans.get("success", True) or "error" in ans:
            raise Failure(f"query failed: {sql}\n{json.dumps(ans)[:500]}")
        return ms, ans

    def stop(self, timeout=300):
        # The end of stdin stops serve, which closes the sink (a final flush); SIGTERM after.
        try:
            self.p.p.stdin.close()
            self.p.p.wait(timeout)
        except (subprocess.TimeoutExpired, OSError):
            pass
        return self.p.stop(timeout=30)


def query_rows(ans):
    """The rows of a query() answer as dicts, whatever its shape (data: [dict] or columns+rows)."""
    data = ans.get("data", [])
    cols = ans.get("columns") or ans.get("meta")
    if data and not isinstance(data[0], dict) and cols:
        names = [c["name"] if isinstance(c, dict) else c for c in cols]
        return [dict(zip(names, r)) for r in data]
    return data


def sink_count(serve, table):
    _, ans = serve.query(f"SELECT count(*) AS n FROM {table}")
    return int(query_rows(ans)[0]["n"])


def case_sink_ingest(ctx):
    """(e) sink ingest: OTLP/HTTP into `sink_tool serve` on both cores, closed loop."""
    label = "e sink ingest, OTLP/HTTP in, 200 = committed (2 cores, closed loop)"

    def fn():
        d = ctx.dir("e")
        serve = SinkServe(ctx, d, os.path.join(d, "data"), core=ctx.sink_cores)
        try:
            sampler = Sampler(serve.pid)
            result = {}

            def load():
                try:
                    result["lg"] = run_loadgen(
                        ctx, f"127.0.0.1:{serve.http_port}", ctx.payload(PAYLOAD_TRACES),
                        core=ctx.load_core, check=False,
                        extra=["--duration", ctx.duration, "--warmup", ctx.warmup,
                               "--unique-ids", *HTTP_CLOSED])
                except Failure as e:
                    result["err"] = e

            th = threading.Thread(target=load)
            th.start()
            time.sleep(ctx.warmup)
            t0 = time.monotonic()
            time.sleep(ctx.duration)
            t1 = time.monotonic()
            th.join()
            sampler.sample()
            sampler.stop()
            if "err" in result:
                raise result["err"]
            lg = result["lg"]
            cpu, wall = sampler.cpu_between(t0, t1)
            w, tot = lg["window"], lg["total"]
            sent = tot["ok"] + tot["failed"]
            # Acknowledged means committed: every acknowledged span must be in the table now.
            stored = sink_count(serve, "spans")
            if stored != tot["ok_items"]:
                raise Failure(f"[e] the sink holds {stored} spans, {tot['ok_items']} were "
                              f"acknowledged")
            return {label: {
                "items_per_s": w["items_per_s"], "requests_per_s": w["requests_per_s"],
                "delivered_items_per_s": None,
                "cpu_s_per_m_items": cpu / (w["items"] / 1e6) if w["items"] else None,
                "cpu_pct": 100.0 * cpu / wall if wall > 0 else None,
                "rss_peak_mib": sampler.hwm_kb() / 1024,
                "rss_steady_mib": sampler.rss_steady_kb(t0, t1) / 1024,
                "p50_us": lg["latency_us"]["p50"], "p99_us": lg["latency_us"]["p99"],
                "p999_us": lg["latency_us"]["p999"], "failed": tot["failed"],
                "shed_pct": 100.0 * tot["failed"] / sent if sent else 0.0,
                "acknowledged_items": tot["ok_items"], "delivered_items": stored,
                "loadgen_cpu_pct": 100.0 * lg["loadgen_cpu_s"] / tot["elapsed_s"],
                "status": lg["http_status"]}}
        finally:
            serve.stop()
    return (label, fn)


def case_sink_module(ctx):
    """(e) the module alone: `sink_tool bench` appends as fast as the sink commits."""
    label = "e sink module alone (sink_tool bench, 16 appends in flight, 2 cores)"

    def fn():
        d = ctx.dir("e-module")
        argv = [sink_tool_path(ctx), *SINK_OPTS, os.path.join(d, "data"), "bench", "traces",
                ctx.payload(PAYLOAD_TRACES), "--seconds", str(max(1, round(ctx.duration))),
                "--inflight", "16"]
        t = time.monotonic()
        if ctx.sink_cores:
            argv = PRIO + ["taskset", "-c", ctx.sink_cores, *argv]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=ctx.env)
        sampler = Sampler(p.pid)
        out, err = p.communicate(timeout=ctx.duration + 300)
        sampler.stop()
        if p.returncode != 0:
            raise Failure(f"sink_tool bench failed ({p.returncode}): {err.decode()[-500:]}")
        j = json.loads(out.decode().strip().splitlines()[-1])
        cpu = sampler.samples[-1][1] - sampler.samples[0][1] if sampler.samples else 0
        wall = time.monotonic() - t
        rows = j["rows"]
        return {label: {"items_per_s": j["rows_per_second"], "delivered_items_per_s": None,
                        "requests_per_s": j["requests_per_second"],
                        "cpu_s_per_m_items": cpu / (rows / 1e6) if rows else None,
                        "cpu_pct": 100.0 * cpu / wall if wall > 0 else None,
                        "rss_peak_mib": sampler.hwm_kb() / 1024,
                        "rss_steady_mib": sampler.rss_steady_kb(t, t + wall) / 1024,
                        "shed_pct": 0.0}}
    return (label, fn)


def scenario_e(ctx, res):
    sink_tool_path(ctx)
    res.extend(run_cases(ctx, [case_sink_ingest(ctx), case_sink_module(ctx)]))


# The SQL the API would run (DESIGN.md section "API"): {tid} and {svc} are filled in.
F_QUERIES = [
    ("trace by id (GET /traces/{id})",
     "SELECT * FROM spans WHERE trace_id = '{tid}' ORDER BY start_time_unix_nano"),
    ("count by service (aggregate)",
     "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name"),
    # /traces/: the 20 newest root spans first, then the aggregates of just those traces.
    ("traces list, limit 20 (GET /traces/)",
     "WITH roots AS (SELECT trace_id, span_name, service_name, start_time FROM spans "
     "WHERE coalesce(parent_span_id, '') = '' ORDER BY start_time DESC LIMIT 20) "
     "SELECT r.trace_id, r.span_name, r.service_name, min(s.start_time) AS start_time, "
     "max(s.end_time) AS end_time, "
     "(max(s.end_time_unix_nano) - min(s.start_time_unix_nano)) / 1e6 AS duration_ms, "
     "count(*) AS span_count, count(*) FILTER (WHERE s.status_code = 'ERROR') AS error_count, "
     "list(DISTINCT s.service_name) AS services FROM roots r JOIN spans s USING (trace_id) "
     "GROUP BY r.trace_id, r.span_name, r.service_name ORDER BY start_time DESC"),
    ("traces list filtered by service (GET /traces/?service_name=)",
     "WITH roots AS (SELECT trace_id, span_name, service_name, start_time FROM spans "
     "WHERE coalesce(parent_span_id, '') = '' AND service_name = '{svc}' "
     "ORDER BY start_time DESC LIMIT 20) "
     "SELECT r.trace_id, r.span_name, r.service_name, min(s.start_time) AS start_time, "
     "max(s.end_time) AS end_time, count(*) AS span_count, "
     "count(*) FILTER (WHERE s.status_code = 'ERROR') AS error_count, "
     "list(DISTINCT s.service_name) AS services FROM roots r JOIN spans s USING (trace_id) "
     "GROUP BY r.trace_id, r.span_name, r.service_name ORDER BY start_time DESC"),
    # The same list computed the obvious way: every trace aggregated, then the newest 20.
    ("traces list, every trace aggregated first (naive plan)",
     "SELECT trace_id, min(start_time) AS start_time, max(end_time) AS end_time, "
     "count(*) AS span_count, count(*) FILTER (WHERE status_code = 'ERROR') AS error_count, "
     "list(DISTINCT service_name) AS services FROM spans GROUP BY trace_id "
     "ORDER BY start_time DESC LIMIT 20"),
    ("log search, limit 50 (GET /logs/?q=error)",
     "SELECT timestamp, severity_text, body, trace_id, span_id, service_name FROM logs "
     "WHERE body ILIKE '%error%' ORDER BY timestamp DESC LIMIT 50"),
]


def sink_load(ctx, serve, payload, want, conns=HTTP_CLOSED):
    """Sends |payload| with fresh ids until |want| items are acknowledged (committed)."""
    got, per = 0, None
    for _ in range(20):
        n = -(-(want - got) // (per or 512))
        if n <= 0:
            break
        lg = run_loadgen(ctx, f"127.0.0.1:{serve.http_port}", ctx.payload(payload),
                         core=ctx.load_core, timeout=7200,
                         extra=["--requests", n, "--unique-ids", *conns])
        got += lg["total"]["ok_items"]
        if lg["total"]["ok"]:
            per = lg["total"]["ok_items"] // lg["total"]["ok"]
    return got


def scenario_f(ctx, res, spans=10_000_000, logs=1_000_000, data_dir=None, n=7):
    """
    (f) queries over |spans| spans and |logs| log records: each query once to warm up, then |n|
    timed runs (median and max). |data_dir| reuses a sink loaded before (it is loaded here when
    it holds fewer spans); otherwise a fresh one is loaded with unique trace and span ids.
    """
    sink_tool_path(ctx)
    d = ctx.dir("f")
    data = data_dir or os.path.join(d, "data")
    out = {"label": "f sink queries", "spans": None, "logs": None, "load_s": None,
           "loadavg_1m": None, "queries": {}}
    t = time.monotonic()
    serve = SinkServe(ctx, d, data, core=ctx.sink_cores, timeout=600)
    try:
        out["open_s"] = time.monotonic() - t
        have_spans, have_logs = sink_count(serve, "spans"), sink_count(serve, "logs")
        if have_spans < spans or have_logs < logs:
            ctx.log(f"[f] loading {spans - min(have_spans, spans):,} spans and "
                    f"{logs - min(have_logs, logs):,} log records")
            t = time.monotonic()
            sink_load(ctx, serve, PAYLOAD_TRACES, spans - min(have_spans, spans))
            sink_load(ctx, serve, "logs_512.pb", logs - min(have_logs, logs))
            out["load_s"] = time.monotonic() - t
            have_spans, have_logs = sink_count(serve, "spans"), sink_count(serve, "logs")
        out["spans"], out["logs"] = have_spans, have_logs
        if have_spans < spans:
            raise Failure(f"[f] the sink holds {have_spans} spans, {spans} were loaded")
        _, st = serve.command("stats")
        out["sink_stats"] = st
        # A trace from the middle of the load, and a service that exists.
        _, a = serve.query(f"SELECT trace_id FROM spans LIMIT 1 OFFSET {have_spans // 2}")
        tid = query_rows(a)[0]["trace_id"]
        svc = "frontend"  # The service of the payload's root spans.
        out["loadavg_1m"] = os.getloadavg()[0]
        for name, sql in F_QUERIES:
            sql = sql.replace("{tid}", tid).replace("{svc}", svc)
            times, ans = [], None
            for i in range(n + 1):
                ms, ans = serve.query(sql)
                if i > 0:  # The first run warms caches; the goals are about a warm sink.
                    times.append(ms)
            rows = query_rows(ans)
            out["queries"][name] = {"median_ms": statistics.median(times), "max_ms": max(times),
                                    "min_ms": min(times), "rows": len(rows), "sql": sql}
            if name.startswith("count by service"):
                total = sum(int(r["n"]) for r in rows)
                if total != have_spans:
                    raise Failure(f"[f] count by service sums to {total}, the sink holds "
                                  f"{have_spans}")
            if name.startswith("trace by id") and not rows:
                raise Failure(f"[f] trace {tid} has no spans")
            if name.startswith("traces list") and not rows:
                raise Failure(f"[f] {name}: no rows")
            ctx.log(f"[f]   {name}: median {statistics.median(times):.1f} ms, max "
                    f"{max(times):.1f} ms, {len(rows)} rows")
        res.append(out)
    finally:
        serve.stop()



def scenario_g(ctx, res):
    out = {"label": "g start-up and idle", "agent": None, "python": None}
    # The bare daemon: exec to ready file, then idle RSS after 2 s (forwarding config).
    if os.access(ctx.dlotel, os.X_OK):
        starts, rss = [], []
        for i in range(1 if ctx.smoke else max(ctx.runs, 5)):
            d = ctx.dir("g-agent")
            nu, nport = start_nullup(ctx, d)
            t = time.monotonic()
            agent, _ = start_agent(ctx, d, forward_config("http", "gzip", nport),
                                   core=ctx.agent_core)
            starts.append((time.monotonic() - t) * 1000)
            time.sleep(2)
            rss.append(proc_mem_detail_kb(agent.pid))
            agent.stop()
            nu.stop()
        out["agent"] = {"start_ms": statistics.median(starts),
                        "start_ms_max": max(starts),
                        "idle_rss_mib": statistics.median(m["rss"] for m in rss) / 1024,
                        "idle_rss_anon_mib": statistics.median(m["anon"] for m in rss) / 1024,
                        "idle_rss_file_mib": statistics.median(m["file"] for m in rss) / 1024,
                        "idle_pss_mib": statistics.median(m["pss"] for m in rss) / 1024}
        a = out["agent"]
        ctx.log(f"[g] dlotel agent: ready in {a['start_ms']:.1f} ms (median), idle RSS "
                f"{a['idle_rss_mib']:.2f} MiB ({a['idle_rss_anon_mib']:.2f} anon, "
                f"{a['idle_rss_file_mib']:.2f} file), PSS {a['idle_pss_mib']:.2f} MiB")
    # dlotel.start() from Python, in a fresh interpreter each time: the launcher spawns the
    # daemon and returns once it listens.
    pydir = os.path.join(REPO, "python")
    lib = os.path.join(os.path.dirname(ctx.bin_dir), "lib", "libdlotel.so")
    pyenv = {**ctx.env, "PYTHONPATH": pydir, "DLOTEL_LIBRARY": lib}
    if os.path.exists(lib):
        with open(lib, "rb") as f:
            asan = b"__asan_init" in f.read()
        if asan:
            # An ASan build of libdlotel needs the dynamic runtime preloaded into the
            # uninstrumented interpreter (as tests/integration/test_launcher.py does); the
            # launcher keeps it out of the daemon. The interpreter's leaks are not ours.
            rt = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                                stdout=subprocess.PIPE, text=True).stdout.strip()
            if not os.path.exists(rt):
                raise Skip(f"g: an ASan libdlotel, but no dynamic ASan runtime at {rt}")
            pyenv["LD_PRELOAD"] = rt
            pyenv["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    probe = subprocess.run(["/usr/bin/python3", "-c",
                            "import dlotel, dlotel._native as n; n.lib()"],
                           env=pyenv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode != 0 or not os.path.exists(lib):
        ctx.log("[g] dlotel.start(): not built yet (python/dlotel or lib/libdlotel.so missing)")
        out["python"] = "not built yet"
    else:
        script = r"""
import json, os, sys, time
import dlotel
a = dlotel.Agent(env=True, otlp_grpc_endpoint="127.0.0.1:0", otlp_http_endpoint="127.0.0.1:0",
                 admin_endpoint="127.0.0.1:0", runtime_dir=sys.argv[1], state_dir=sys.argv[2],
                 daemon_path=sys.argv[3], exporters={"up": dlotel.Config.otlp_exporter(
                     endpoint=sys.argv[4], compression="gzip")})
t = time.perf_counter()
a.start()
start_ms = (time.perf_counter() - t) * 1000
time.sleep(2)
rss = 0
with open(f"/proc/{a.pid}/status") as f:
    for line in f:
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
a.stop(daemon=True)
print(json.dumps({"start_ms": start_ms, "idle_rss_mib": rss, "spawned": a.spawned}))
"""
        starts, rss = [], []
        for i in range(1 if ctx.smoke else max(ctx.runs, 5)):
            d = ctx.dir("g-python")
            nu, nport = start_nullup(ctx, d)
            try:
                r = subprocess.run(["/usr/bin/python3", "-c", script, os.path.join(d, "run"),
                                    os.path.join(d, "state"), ctx.dlotel,
                                    f"http://127.0.0.1:{nport}"],
                                   env={**pyenv, "HOME": d}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=60)
            finally:
                nu.stop()
            if r.returncode != 0:
                why = r.stderr.decode(errors="replace").strip().splitlines()
                why = " / ".join(why[-2:]) if why else f"exit status {r.returncode}"
                ctx.log(f"[g] dlotel.start() does not work yet: {why}")
                out["python"] = f"not working yet: {why}"
                break
            j = json.loads(r.stdout.splitlines()[-1])
            starts.append(j["start_ms"])
            rss.append(j["idle_rss_mib"])
        if not starts:
            res.append(out)
            return
        out["python"] = {"start_ms": statistics.median(starts),
                         "start_ms_max": max(starts),
                         "idle_rss_mib": statistics.median(rss)}
        ctx.log(f"[g] dlotel.start(): {out['python']['start_ms']:.1f} ms (median), daemon idle "
                f"RSS {out['python']['idle_rss_mib']:.2f} MiB")
    res.append(out)


SCENARIOS = {"a": scenario_a, "b": scenario_b, "c": scenario_c, "h": scenario_h,
             "d": scenario_d, "e": scenario_e, "f": scenario_f, "g": scenario_g,
             "ab": scenario_ab, "i": scenario_i}


def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:.2f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"


def markdown(results):
    rows = ["| scenario | items/s acked | items/s delivered | CPU s / M items | CPU % of a core | "
            "RSS steady / peak MiB | p50 / p99 / p999 us | shed % | otlp_scan us (speed) | "
            "run-queue wait % | load avg (1 min) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    other = []
    for r in results:
        if "median" in r:
            m = r["median"]
            label = r["label"]
            rows.append(
                f"| {label} | {fmt(m.get('items_per_s'))} | "
                f"{fmt(m.get('delivered_items_per_s'))} | {fmt(m.get('cpu_s_per_m_items'))} | "
                f"{fmt(m.get('cpu_pct'))} | {fmt(m.get('rss_steady_mib'))} / "
                f"{fmt(m.get('rss_peak_mib'))} | {fmt(m.get('p50_us'))} / "
                f"{fmt(m.get('p99_us'))} / {fmt(m.get('p999_us'))} | {fmt(m.get('shed_pct'))} | "
                f"{fmt(m.get('scan_us'))} | {fmt(m.get('runq_wait_pct'))} | "
                f"{fmt(m.get('loadavg_1m_min'))}-{fmt(m.get('loadavg_1m_max'))} |")
        else:
            other.append("```\n" + json.dumps(r, indent=1) + "\n```")
    return "\n".join(rows) + "\n\n" + "\n".join(other)


# ---- profile: instructions per request under callgrind ----------------------------------------

PROFILE_CASES = [
    ("a: OTLP/HTTP in, nothing out", "http", None, "none"),
    ("b: OTLP/HTTP in, OTLP/HTTP out, none", "http", "http", "none"),
    ("b: OTLP/HTTP in, OTLP/HTTP out, gzip", "http", "http", "gzip"),
    ("b: OTLP/HTTP in, OTLP/HTTP out, zstd", "http", "http", "zstd"),
    ("c: OTLP/gRPC in, OTLP/gRPC out, none", "grpc", "grpc", "none"),
]


def callgrind_functions(path):
    """{function: exclusive Ir} from a callgrind output file, and the total."""
    r = subprocess.run(["callgrind_annotate", "--threshold=100", path], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    funcs, total = {}, 0
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].replace(",", "").isdigit():
            ir = int(parts[0].replace(",", ""))
            if "PROGRAM" in line and "TOTALS" in line:
                total = ir
                continue
            obj = ""
            if parts[-1].startswith("["):
                obj = os.path.basename(parts[-1].strip("[]"))
                name = parts[-2]
            else:
                name = parts[-1]
            name = name.split(":", 1)[-1] if ":" in name else name
            if name.startswith("0x"):
                name = f"{obj}:{name.lstrip('0x').lstrip('0') or '0'}"
            funcs[name] = funcs.get(name, 0) + ir
    return funcs, total


def profile(ctx, n=40, rate=4.0, top=12):
    """
    User-space instructions per 512-span request for each path, from two runs of the agent
    under valgrind --tool=callgrind: one that receives |n| requests and one that receives none
    (start-up and shutdown), subtracted. Instruction counts do not depend on what else runs on
    the machine, so they compare fairly across runs and machines; they leave out the kernel.
    """
    if shutil.which("valgrind") is None:
        raise Skip("valgrind is not installed")
    out = []
    for label, inp, outp, comp in PROFILE_CASES:
        res = {}
        for count in (0, n):
            d = ctx.dir(f"profile-{inp}-{comp}-{count}")
            cg = os.path.join(d, "callgrind.out")
            nu, nport = start_nullup(ctx, d)
            agent = None
            try:
                agent, ready = start_agent(
                    ctx, d, forward_config(outp, comp, nport), timeout=120,
                    wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}"])
                port = ready["grpc_port"] if inp == "grpc" else ready["http_port"]
                if count:
                    lg = run_loadgen(ctx, f"127.0.0.1:{port}", ctx.payload(PAYLOAD_TRACES),
                                     proto=inp, extra=["--requests", count, "--rate", rate,
                                                       "--connections", 1, "--drain", 300])
                    if lg["total"]["failed"] or lg["total"]["ok"] != count:
                        raise Failure(f"profile {label}: {lg['total']}")
                    if outp:
                        st = wait_delivered(nport, lg["total"]["ok_items"], timeout=120)
                        if st["items"] != lg["total"]["ok_items"]:
                            raise Failure(f"profile {label}: delivered {st['items']}")
                else:
                    time.sleep(1.0)
            finally:
                if agent is not None:
                    agent.stop(timeout=120)
                nu.stop()
            res[count] = callgrind_functions(cg)
        (f0, t0), (f1, t1) = res[0], res[n]
        per_req = (t1 - t0) / n
        diff = {k: (v - f0.get(k, 0)) / n for k, v in f1.items()}
        hot = sorted(diff.items(), key=lambda kv: -kv[1])[:top]
        out.append({"label": label, "ir_per_request": per_req,
                    "functions": [{"function": k, "ir_per_request": v,
                                   "pct": 100.0 * v / per_req if per_req else 0} for k, v in hot]})
        ctx.log(f"[profile] {label}: {per_req / 1e6:.2f} M instructions per 512-span request")
        for k, v in hot:
            ctx.log(f"[profile]     {v / 1e3:10,.0f} k  {100.0 * v / per_req:5.1f}%  {k}")
    return out


# ---- smoke ------------------------------------------------------------------------------------


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def smoke(ctx):
    """Every tool runs, and every item acknowledged arrives. Speed is never judged."""
    d = ctx.dir("smoke")
    nu, nport = start_nullup(ctx, d, count="full")
    target = f"127.0.0.1:{nport}"
    sent = 0
    try:
        # The generator straight into the null upstream: both protocols, all signals, each codec.
        cases = [("http", "traces_512.pb", "none"), ("grpc", "traces_512.pb", "none"),
                 ("http", "logs_512.pb", "gzip"), ("grpc", "metrics.pb", "zstd"),
                 ("http", "traces_512.json", "none")]
        for proto, payload, comp in cases:
            lg = run_loadgen(ctx, target, ctx.payload(payload), proto=proto,
                             extra=["--requests", 20, "--connections", 2, "--depth", 2,
                                    "--compress", comp])
            check(lg["total"]["ok"] == 20 and lg["total"]["failed"] == 0,
                  f"loadgen -> nullup {proto} {payload}: {lg['total']}")
            if not payload.endswith(".json"):
                sent += lg["total"]["ok_items"]
        lg = run_loadgen(ctx, target, ctx.payload("traces_512.pb"), proto="http",
                         extra=["--rate", 200, "--duration", 0.5, "--unique-ids"])
        check(lg["total"]["failed"] == 0 and lg["total"]["missed"] == 0 and
              lg["latency_us"]["count"] > 0, f"open loop: {lg['total']}")
        sent += lg["total"]["ok_items"]
        st = nullup_stats(nport)
        check(st["items"] == sent and st["bad"] == 0 and st["count_mismatch"] == 0,
              f"nullup counted {st['items']} items (bad {st['bad']}, count_mismatch "
              f"{st['count_mismatch']}), loadgen had {sent} acknowledged")
        ctx.log(f"smoke: loadgen -> nullup: {sent} items sent and counted")
    finally:
        rc = nu.stop()
        check(rc == 0, f"nullup exited with {rc}")

    if not os.access(ctx.dlotel, os.X_OK):
        ctx.log(f"smoke: {ctx.dlotel} not built: the agent part is skipped")
        return
    # Through the agent: HTTP -> HTTP (gzip), gRPC -> gRPC (zstd).
    for in_proto, out_proto, comp in (("http", "http", "gzip"), ("grpc", "grpc", "zstd")):
        d = ctx.dir(f"smoke-agent-{in_proto}")
        nu, nport = start_nullup(ctx, d, count="full")
        agent = None
        try:
            agent, ready = start_agent(ctx, d, forward_config(out_proto, comp, nport))
            port = ready["grpc_port"] if in_proto == "grpc" else ready["http_port"]
            want = 0
            for payload in ("traces_512.pb", "logs_512.pb", "metrics.pb"):
                lg = run_loadgen(ctx, f"127.0.0.1:{port}", ctx.payload(payload), proto=in_proto,
                                 extra=["--requests", 30, "--connections", 2, "--depth", 2])
                check(lg["total"]["failed"] == 0, f"agent {in_proto}: {lg}")
                want += lg["total"]["ok_items"]
            st = wait_delivered(nport, want)
            check(st["items"] == want and st["bad"] == 0,
                  f"agent {in_proto}->{out_proto} {comp}: delivered {st['items']} items "
                  f"(bad {st['bad']}), acknowledged {want}")
            check(st["encodings"]["identity" if comp == "none" else comp] > 0,
                  f"agent {in_proto}->{out_proto}: nothing arrived {comp}-compressed: {st}")
            ctx.log(f"smoke: agent {in_proto} -> {out_proto} ({comp}): {want} items "
                    f"acknowledged and delivered")
        finally:
            if agent is not None:
                rc = agent.stop()
                check(rc == 0, f"agent exited with {rc}:\n{agent.tail()}")
            nu.stop()


def smoke_scenarios(ctx, names=()):
    """
    Every scenario's code path once, at toy sizes (0.3 s windows, probes of 20-40 requests/s,
    4,096 spans for f), so that bench.py keeps working: each must produce its rows, and its own
    checks (delivered == acknowledged, stored == acknowledged, counts by service == loaded) must
    pass. The figures are printed for the log and never compared with anything.
    """
    ctx.smoke = True
    ctx.runs, ctx.duration, ctx.warmup = 1, 0.3, 0.1
    # Nothing is pinned: CI runs tests side by side, on machines of any size.
    ctx.agent_core = ctx.load_core = ctx.sink_cores = None
    names = list(names) or ["a", "b", "c", "d", "e", "f", "g", "i"]
    for n in names:
        res = []
        t = time.monotonic()
        try:
            if n == "f":
                scenario_f(ctx, res, spans=4096, logs=1024, n=1)
            else:
                SCENARIOS[n](ctx, res)
        except Skip as e:
            ctx.log(f"smoke: scenario {n} skipped: {e}")
            continue
        check(res or n == "h", f"scenario {n} produced no figures")
        if n == "g":
            check(isinstance(res[0].get("agent"), dict), f"g: the agent did not start: {res}")
        ctx.log(f"smoke: scenario {n}: {len(res)} rows in {time.monotonic() - t:.1f} s")


# ---- main -------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["smoke", "run", "profile"])
    ap.add_argument("scenarios", nargs="*", help="a b c h d e f g, or all; ab is a shorter "
                    "set (a, b none, d without disk) for --variant comparisons")
    default_bin = os.path.join(REPO, "build-bench", "bin")
    ap.add_argument("--bin-dir", default=default_bin)
    ap.add_argument("--payloads", default=os.path.join(REPO, "..", "shared", "payloads"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--md", help="write the figures table (markdown) here")
    ap.add_argument("--dlotel", help="the agent binary (default: BIN_DIR/dlotel)")
    ap.add_argument("--variant", action="append",
                    help="NAME=PATH[,VAR=VALUE...]: compare several agent binaries (or "
                         "environments) side by side, interleaved in every round; repeatable")
    ap.add_argument("--cases", help="run only the cases whose name matches this regular "
                    "expression (a, b-none, b-gzip, b-overload, c-none, d 10k spans/s, ...)")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the pinned processes under `nice -n N` (negative: ahead of other "
                    "work on a shared machine; needs privileges)")
    ap.add_argument("--agent-core", default="0")
    ap.add_argument("--load-core", default="1")
    ap.add_argument("--f-spans", type=int, default=10_000_000)
    ap.add_argument("--f-logs", type=int, default=1_000_000)
    ap.add_argument("--f-data", help="f: a sink data directory to reuse (loaded up to "
                    "--f-spans and --f-logs if it holds fewer)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.nice:
        PRIO[:] = ["nice", "-n", str(args.nice)]
    ctx = Ctx(args)
    try:
        if args.command == "smoke":
            smoke(ctx)
            smoke_scenarios(ctx, [x for x in args.scenarios if x != "all"])
            print("bench smoke: OK")
            return 0
        if args.command == "profile":
            prof = profile(ctx)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"profile": prof}, f, indent=1)
            return 0
        names = args.scenarios or ["all"]
        if "all" in names:
            names = ["a", "b", "c", "h", "d", "e", "f", "g", "i"]
        results, ran, skipped, failed = [], [], {}, {}
        loads = []
        stop_loads = threading.Event()

        def watch_load():
            while not stop_loads.wait(5.0):
                loads.append(os.getloadavg()[0])

        threading.Thread(target=watch_load, daemon=True).start()
        cpu_model = ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu_model = next((x.split(":", 1)[1].strip() for x in f
                                  if x.startswith("model name")), "")
        except OSError:
            pass
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpu": cpu_model,
                "kernel": os.uname().release,
                "loadavg_start": os.getloadavg(), "nproc": os.cpu_count(),
                "runs": ctx.runs, "duration_s": ctx.duration, "warmup_s": ctx.warmup,
                "nice": args.nice}
        for n in names:
            try:
                if n == "f":
                    scenario_f(ctx, results, spans=args.f_spans, logs=args.f_logs,
                               data_dir=args.f_data)
                else:
                    SCENARIOS[n](ctx, results)
                ran.append(n)
            except Skip as e:
                ctx.log(f"[{n}] skipped: {e}")
                skipped[n] = str(e)
            except Failure as e:
                # One scenario failing (delivered != acknowledged, a tool dying) is reported,
                # and the others still run.
                ctx.log(f"[{n}] FAILED: {e}")
                failed[n] = str(e)
        meta["loadavg_end"] = os.getloadavg()
        stop_loads.set()
        if loads:
            meta["loadavg_1min_during"] = {"min": min(loads), "median": statistics.median(loads),
                                           "max": max(loads)}
        meta["ran"] = ran
        meta["skipped"] = skipped
        meta["failed"] = failed
        md = markdown(results)
        print(md)
        print(f"ran: {' '.join(ran) or '-'}; skipped: "
              + (", ".join(f"{k} ({v})" for k, v in skipped.items()) or "-"))
        if failed:
            print("FAILED: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
        print(f"load average: start {meta['loadavg_start']}, end {meta['loadavg_end']}, "
              f"1-min during the run: {meta.get('loadavg_1min_during')}")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
        if args.md:
            with open(args.md, "w") as f:
                f.write(md)
        return 1 if failed else 0
    except Failure as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        ctx.cleanup()


if __name__ == "__main__":
    sys.exit(main())
