"""The sink's durability and its Parquet files, with real processes (issue 5).

sink_tool (tests/sink_tool.c) drives the DuckDB sink module in a child process that the test
kills: with SIGKILL at a random moment of a long ingest, or at each crash-injection point of the
flush and compaction protocols (DLOTEL_SINK_CRASH makes the module SIGKILL itself right there).
After a restart, every request the child acknowledged must be present exactly once, and nothing
it did not acknowledge may be present in part.

sink_reader (tests/sink_reader.c) is "another engine": a fresh in-memory DuckDB that reads the
hive-partitioned Parquet tree with hive_partitioning=true and knows nothing of the manifest or
the hot buffer. What it finds must equal what the sink's own SQL finds.

Each request gets its own user_uid (sink_tool --uid-prefix), so a row tells which request it
came from: "r17" has 512 rows if request 17 was stored, 0 if it was not, never anything else.
"""

import json
import os
import random
import signal
import subprocess
import time

import pytest

import itlib

TOOL = os.environ.get("DLOTEL_SINK_TOOL")
READER = os.environ.get("DLOTEL_SINK_READER")
TRACES = os.path.join(itlib.PAYLOADS, "traces_512.pb")
LOGS = os.path.join(itlib.PAYLOADS, "logs_512.pb")
METRICS = os.path.join(itlib.PAYLOADS, "metrics.pb")

pytestmark = pytest.mark.skipif(not TOOL or not READER,
                                reason="DLOTEL_SINK_TOOL and DLOTEL_SINK_READER are not set "
                                       "(run through ctest)")


def tool(data, *args, opts=(), env=None, timeout=120, check=True):
    cmd = [TOOL, *opts, str(data), *args]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=env, preexec_fn=itlib._die_with_parent)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}:\n{p.stderr.decode()[-3000:]}")
    return p


def sql(data, query, *extra):
    """Admin SQL through the sink (opening it runs the crash recovery); returns the rows."""
    p = tool(data, "query", query, "--admin", "--cap", "1000000", *extra)
    answer = json.loads(p.stdout)
    assert answer["success"], answer
    return answer["data"]


def read_parquet(data, query):
    """SQL over the Parquet tree alone, in a separate DuckDB process."""
    p = subprocess.run([READER, str(data), query], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line]


def acked_of(stdout):
    return {int(line.split()[1]) for line in stdout.decode().splitlines()
            if line.startswith("acked ")}


def per_uid(data):
    rows = sql(data, "SELECT user_uid AS u, count(*) AS n, count(DISTINCT span_id) AS d "
                     "FROM spans GROUP BY ALL")
    return {r["u"]: (r["n"], r["d"]) for r in rows}


def check_exactly_once(data, acked, submitted):
    """Every acknowledged request has all its 512 rows once; others all or nothing."""
    counts = per_uid(data)
    for uid, (n, distinct) in counts.items():
        assert uid is not None and uid.startswith("r"), uid
        i = int(uid[1:])
        assert 0 <= i < submitted, uid
        assert n == 512 and distinct == 512, f"request {i}: {n} rows, {distinct} distinct"
    missing = [i for i in acked if f"r{i}" not in counts]
    assert not missing, f"acknowledged but lost: {missing}"
    return counts


# ---- crash injection in the flush protocol -------------------------------------------------

FLUSH_POINTS = ["flush_after_pending", "flush_after_staging", "flush_after_rename",
                "flush_before_commit", "flush_after_commit"]


@pytest.mark.parametrize("point", FLUSH_POINTS)
def test_flush_crash_point(tmp_path, point):
    data = tmp_path / "data"
    opts = ["--rows-per-file", "500"]
    env = dict(os.environ, DLOTEL_SINK_CRASH=point)
    # 512 rows >= 500: the writer flushes right after the first commit, and dies at |point|.
    p = tool(data, "ingest", "traces", TRACES, "--count", "3", "--uid-prefix", "r",
             opts=opts, env=env, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr.decode()[-2000:])
    acked = acked_of(p.stdout)
    assert 0 in acked  # The first request was committed before the flush began.

    # The restart recovers (redoes the pending generation, or finds it done) ...
    counts = check_exactly_once(data, acked, 3)
    # ... and the hot rows and the files together hold each row once: the same through the
    # sink's views and through a plain hive-partitioned read after the shutdown flush.
    total = sum(n for n, _ in counts.values())
    tool(data, "flush", opts=opts)
    on_disk = read_parquet(data, "SELECT count(*) AS n, count(DISTINCT (user_uid, span_id)) AS d "
                                 "FROM spans")
    assert on_disk == [{"n": total, "d": total}]
    # Files of at most 500 rows, named part-<gen>-<n>.parquet, nothing left in .staging.
    files = read_parquet(data, "SELECT filename AS f, count(*) AS n FROM read_parquet("
                               f"'{data}/spans/*/*.parquet', filename = true) GROUP BY ALL")
    assert files and all(f["n"] <= 500 for f in files)
    for f in files:
        assert os.path.basename(f["f"]).startswith("part-")
    assert os.listdir(data / ".staging") == []
    # The stats agree with the disk.
    st = json.loads(tool(data, "stats").stdout)
    assert st["tables"]["spans"]["files"] == len(files)
    assert st["tables"]["spans"]["file_rows"] == total
    assert st["tables"]["spans"]["hot_rows"] == 0


COMPACT_POINTS = ["compact_after_staging", "compact_after_rename", "compact_before_commit"]


@pytest.mark.parametrize("point", COMPACT_POINTS)
def test_compaction_crash_point(tmp_path, point):
    data = tmp_path / "data"
    # No retention: the payloads are dated 2026-01-01.
    opts = ["--rows-per-file", "1000", "--retention-days", "0"]
    for i in range(3):
        tool(data, "ingest", "traces", TRACES, "--uid", f"r{i}", opts=opts)  # Closing flushes.
    assert len(read_parquet(data, "SELECT DISTINCT filename FROM read_parquet("
                                  f"'{data}/spans/*/*.parquet', filename = true)")) == 3
    env = dict(os.environ, DLOTEL_SINK_CRASH=point)
    p = tool(data, "maintain", opts=opts, env=env, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]

    # After the restart the interrupted compaction is gone without a trace: same rows, and the
    # files on disk are exactly the three inputs.
    check_exactly_once(data, {0, 1, 2}, 3)
    disk = read_parquet(data, "SELECT count(*) AS n, count(DISTINCT (user_uid, span_id)) AS d "
                              "FROM spans")
    assert disk == [{"n": 1536, "d": 1536}]
    # Then it compacts for real: two files, sorted by trace and time.
    tool(data, "maintain", opts=opts)
    check_exactly_once(data, {0, 1, 2}, 3)
    files = read_parquet(data, "SELECT filename AS f, count(*) AS n FROM read_parquet("
                               f"'{data}/spans/*/*.parquet', filename = true) GROUP BY ALL "
                               "ORDER BY n DESC")
    assert [f["n"] for f in files] == [1000, 536]
    unsorted = read_parquet(
        data, "SELECT count(*) AS bad FROM (SELECT trace_id AS s, start_time_unix_nano AS t, "
              "lag(trace_id) OVER w AS ps, lag(start_time_unix_nano) OVER w AS pt FROM "
              f"read_parquet('{data}/spans/*/*.parquet', filename = true, file_row_number = true) "
              "WINDOW w AS (PARTITION BY filename ORDER BY file_row_number)) "
              "WHERE ps IS NOT NULL AND (s < ps OR (s = ps AND t < pt))")
    assert unsorted == [{"bad": 0}]


# ---- kill -9 at a random moment of a long ingest ---------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill9_during_ingest(tmp_path, seed):
    rnd = random.Random(seed)
    data = tmp_path / "data"
    submitted = 400
    # Small files, so that flushes (and their renames and commits) run while the kill comes.
    cmd = [TOOL, "--rows-per-file", "3000", str(data), "ingest", "traces", TRACES, "--count",
           str(submitted), "--inflight", "8", "--uid-prefix", "r"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=itlib._die_with_parent)
    want = rnd.randint(5, 60)
    acked = set()
    deadline = time.monotonic() + 120
    while len(acked) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(b"acked "):
            acked.add(int(line.split()[1]))
    time.sleep(rnd.random() * 0.2)
    proc.kill()
    out, err = proc.communicate(timeout=30)
    acked |= acked_of(out)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert len(acked) >= want, f"only {len(acked)} acknowledged: {err.decode()[-2000:]}"

    counts = check_exactly_once(data, acked, submitted)
    # A second restart changes nothing (recovery is idempotent).
    assert per_uid(data) == counts
    # The Parquet tree alone, read by another process, has each stored row once.
    tool(data, "flush")
    disk = read_parquet(data, "SELECT count(*) AS n, count(DISTINCT (user_uid, span_id)) AS d "
                              "FROM spans")
    stored = sum(n for n, _ in counts.values())
    assert disk == [{"n": stored, "d": stored}]


# ---- what other engines see -----------------------------------------------------------------

def test_parquet_read_back(tmp_path):
    data = tmp_path / "data"
    opts = ["--rows-per-file", "100"]
    tool(data, "ingest", "traces", TRACES, opts=opts)
    tool(data, "ingest", "logs", LOGS, opts=opts)
    tool(data, "ingest", "metrics", METRICS, opts=opts)

    for table, rows in (("spans", 512), ("logs", 512), ("metrics", 132)):
        folder = data / table / "date=2026-01-01"
        names = sorted(os.listdir(folder))
        assert len(names) == (rows + 99) // 100
        assert all(n.startswith("part-") and n.endswith(".parquet") for n in names)
        assert read_parquet(data, f"SELECT count(*) AS n FROM {table}") == [{"n": rows}]
        # The hive column is typed DATE and prunes by folder.
        got = read_parquet(data, f"SELECT typeof(date) AS t, count(*) AS n FROM {table} "
                                 "WHERE date = DATE '2026-01-01' GROUP BY ALL")
        assert got == [{"t": "DATE", "n": rows}]

    # Types as the design says, readable without dlotel: MAP(VARCHAR, VARCHAR), TIMESTAMPTZ,
    # JSON text, lists.
    got = read_parquet(data, "SELECT typeof(attributes) AS a, typeof(start_time) AS t, "
                             "attributes['http.route'] AS r, json_extract_string(events, "
                             "'$[0].name') AS e, trace_id, parent_span_id IS NULL AS root FROM "
                             "spans WHERE span_id = 'dd783fe1be4e3280'")
    assert got == [{"a": "MAP(VARCHAR, VARCHAR)", "t": "TIMESTAMP WITH TIME ZONE",
                    "r": "/api/orders/{id}", "e": "request.received",
                    "trace_id": "af9c0078d60d9708440f2fc887062cd7", "root": True}]
    got = read_parquet(data, "SELECT list_sum(bucket_counts) = \"count\" AS ok, "
                             "len(explicit_bounds) AS b FROM metrics WHERE metric_name = "
                             "'db.client.operation.duration' LIMIT 1")
    assert got == [{"ok": True, "b": 15}]
    # zstd, as the design says.
    codecs = read_parquet(data, "SELECT DISTINCT compression AS c FROM parquet_metadata("
                                f"'{data}/*/*/*.parquet')")
    assert {c["c"] for c in codecs} == {"ZSTD"}
    # The internal columns stay inside.
    cols = read_parquet(data, "SELECT column_name AS c FROM (DESCRIBE spans)")
    names = {c["c"] for c in cols}
    assert "_seq" not in names and "_date" not in names
    assert {"trace_id", "span_id", "parent_span_id", "span_name", "span_kind", "service_name",
            "user_uid", "start_time_unix_nano", "end_time_unix_nano", "duration_ns",
            "status_code", "status_message", "scope_name", "attributes", "resource_attributes",
            "events", "links", "date"} <= names


def test_retention_drops_date_folders(tmp_path):
    data = tmp_path / "data"
    tool(data, "ingest", "traces", TRACES, opts=["--retention-days", "0"])
    assert (data / "spans" / "date=2026-01-01").is_dir()
    if time.time() < 1767225600 + 31 * 86400:
        pytest.skip("the clock puts 2026-01-01 within 30 days")
    tool(data, "maintain", opts=["--retention-days", "30"])
    assert not (data / "spans" / "date=2026-01-01").exists()
    assert sql(data, "SELECT count(*) AS n FROM spans") == [{"n": 0}]
    assert read_parquet(data, "SELECT count(*) AS n FROM spans") == [{"n": 0}]
