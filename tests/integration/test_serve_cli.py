"""`dlotel serve` as a new user runs it (issue 5, "done when"): no setting at all, the data under
~/.local/share/dlotel, the OpenTelemetry JS SDK sending, every span acknowledged by the sink, and
Parquet files that a separate DuckDB process reads back with hive partitioning after the stop.
The forwarding agent (no sink) never maps libduckdb; `dlotel serve` does, only then.
"""

import glob
import json
import os
import subprocess
import urllib.request

import pytest

import itlib
from test_sdk_interop import run_send

READER = os.environ.get("DLOTEL_SINK_READER")

pytestmark = pytest.mark.skipif(not READER, reason="DLOTEL_SINK_READER is not set (run through "
                                                   "ctest)")


class Serve(itlib.Agent):
    def __init__(self, workdir, home):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DATALAYER_", "XDG_", "OTEL_"))}
        env["HOME"] = str(home)
        super().__init__(workdir, env=env)
        self.command = "serve"

    def exporter_args(self):
        return []  # nothing but what `dlotel serve` turns on itself


def metric(port, name, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return int(float(line.split()[-1]))
    return 0


def read_parquet(data, sql):
    p = subprocess.run([READER, data, sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


def test_serve_with_no_setting_stores_sdk_telemetry(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve = Serve(tmp_path, home).start()
    try:
        maps = open(f"/proc/{serve.proc.pid}/maps").read()
        assert "libduckdb" in maps, "dlotel serve should have loaded the sink module"
        manifest = run_send(serve, "http/protobuf", "none", "serve-cli")
        # Every span and log record the SDK got a 200 for is committed in the sink.
        assert metric(serve.admin_port, "dlotel_exporter_sent_items_total", exporter="sink",
                      signal="traces") == len(manifest["spans"])
        assert metric(serve.admin_port, "dlotel_exporter_sent_items_total", exporter="sink",
                      signal="logs") == len(manifest["logs"])
    finally:
        serve.stop()

    data = home / ".local" / "share" / "dlotel"
    files = glob.glob(str(data / "spans" / "date=*" / "part-*.parquet"))
    assert files, f"no Parquet file under {data}: {os.listdir(data)}"
    rows = read_parquet(str(data), f"""
        SELECT trace_id, span_id, parent_span_id, span_name, service_name, date
        FROM read_parquet('{data}/spans/*/*.parquet', hive_partitioning = true)""")
    got = {(r["trace_id"], r["span_id"]) for r in rows}
    want = {(s["traceId"], s["spanId"]) for s in manifest["spans"]}
    assert got == want
    assert len(rows) == len(want), "a span was stored twice"
    for r in rows:
        assert r["trace_id"] == r["trace_id"].lower() and len(r["trace_id"]) == 32
    logs = read_parquet(str(data), f"""
        SELECT count(*) AS n FROM read_parquet('{data}/logs/*/*.parquet', hive_partitioning = true)""")
    assert logs[0]["n"] == len(manifest["logs"])


def test_agent_without_sink_never_maps_duckdb(tmp_path):
    agent = itlib.Agent(tmp_path).start()
    try:
        assert "libduckdb" not in open(f"/proc/{agent.proc.pid}/maps").read()
    finally:
        agent.stop()


def test_sink_settings_reach_the_sink(tmp_path):
    """sink.flush_interval (here from its environment variable) makes hot rows reach Parquet on
    their own, with no flush call and no stop; `config --print` shows every sink setting."""
    import time
    home = tmp_path / "home"
    home.mkdir()
    serve = Serve(tmp_path, home)
    serve.env["DATALAYER_OTEL_FLUSH_INTERVAL"] = "1s"
    serve.env["DATALAYER_OTEL_THREADS"] = "1"
    printed = subprocess.run([itlib.dlotel_bin(), "config", "--print", "--sink"], env=serve.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert printed.returncode == 0, printed.stderr.decode()
    text = printed.stdout.decode()
    for key in ("flush_interval", "maintenance_interval", "disk_cap", "gc_grace",
                "queue_max_bytes", "memory_limit", "threads"):
        assert key in text, f"{key} missing from config --print:\n{text}"
    serve.start()
    try:
        body = itlib.payload("traces_512.pb")
        req = urllib.request.Request(f"http://127.0.0.1:{serve.http_port}/v1/traces", data=body,
                                     headers={"Content-Type": "application/x-protobuf"})
        assert urllib.request.urlopen(req, timeout=30).status == 200
        data = home / ".local" / "share" / "dlotel"
        # Well below the 60 s default, so that the setting is what flushed.
        deadline = time.monotonic() + 20
        files = []
        while not files and time.monotonic() < deadline:
            files = glob.glob(str(data / "spans" / "date=*" / "part-*.parquet"))
            time.sleep(0.2)
        assert files, "hot rows were not flushed to Parquet by age (sink.flush_interval=1s)"
    finally:
        serve.stop()
    rows = read_parquet(str(data), f"""
        SELECT count(*) AS n FROM read_parquet('{data}/spans/*/*.parquet')""")
    assert rows[0]["n"] == 512
