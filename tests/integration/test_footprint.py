"""The footprint rule (DESIGN.md section 2): libduckdb is loaded only with the sink module, so a
forwarding `dlotel agent` never maps it, neither at start nor after it has handled traffic. Also
the command line's simplest contract: `dlotel version`.
"""

import os
import re
import subprocess

import itlib


def mapped_files(pid):
    files = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip().startswith("/"):
                files.add(parts[5].strip())
    return files


def test_binary_does_not_link_duckdb():
    out = subprocess.run(["readelf", "-d", itlib.dlotel_bin()], stdout=subprocess.PIPE,
                         check=True, timeout=30).stdout.decode()
    needed = [line for line in out.splitlines() if "(NEEDED)" in line]
    assert needed, out
    assert not any("duckdb" in line or "dlotel_sink" in line for line in needed), needed


def test_running_agent_does_not_map_duckdb(agent):
    # After start-up, and after real traffic on both receivers, nothing DuckDB is mapped.
    files = mapped_files(agent.proc.pid)
    assert any(os.path.basename(f).startswith("libc.so") for f in files), files  # maps readable
    assert not [f for f in files if "duckdb" in f or "dlotel_sink" in f], sorted(files)

    itlib.assert_serving(agent)
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        "--http2-prior-knowledge", "-H", "Content-Type: application/json",
                        "--data-binary", "@" + os.path.join(itlib.PAYLOADS, "traces_512.json"),
                        agent.http_url + "/v1/traces"], stdout=subprocess.PIPE, timeout=30)
    assert p.stdout == b"200", p.stdout
    agent.wait_requests(lambda r: itlib.counts(r)["spans"] >= 512, timeout=15, what="512 spans")

    files = mapped_files(agent.proc.pid)
    assert not [f for f in files if "duckdb" in f or "dlotel_sink" in f], sorted(files)


def test_version_command():
    header = os.path.join(itlib.HERE, "..", "..", "include", "dlotel.h")
    with open(header) as f:
        version = re.search(r'#define DLOTEL_VERSION "([^"]+)"', f.read()).group(1)
    p = subprocess.run([itlib.dlotel_bin(), "version"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 0, p.stderr
    assert version in p.stdout.decode(), (version, p.stdout)


def test_bad_flag_fails_cleanly():
    p = subprocess.run([itlib.dlotel_bin(), "agent", "--no-such-flag"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    assert p.returncode != 0 and p.returncode > 0, p.returncode
    assert p.stderr.strip(), "an unknown flag must be explained on stderr"
