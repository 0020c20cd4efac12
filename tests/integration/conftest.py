"""pytest fixtures for dlotel's integration tests.

Run through ctest (tests/CMakeLists.txt sets DLOTEL_BIN and DLOTEL_PAYLOADS_DIR), or by hand:

    DLOTEL_BIN=build/bin/dlotel /usr/bin/python3 -m pytest -q tests/integration

Debian's pytest has no timeout plugin, so every subprocess call has its own timeout and an
autouse watchdog ends the whole run (with every thread's traceback) when one test hangs. Daemons
are started with PR_SET_PDEATHSIG, so they die with the test process even then.
"""

import faulthandler
import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import itlib  # noqa: E402

# Per-test limit. The slowest test (six SDK runs in one module are separate tests) takes a few
# seconds; this only has to catch a hang.
TEST_WATCHDOG_SECONDS = int(os.environ.get("DLOTEL_IT_TEST_TIMEOUT", "180"))


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(TEST_WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _start(tmp_path_factory, name, extra_args=()):
    d = tmp_path_factory.mktemp(name)
    return itlib.Agent(d, extra_args).start()


@pytest.fixture
def agent(tmp_path_factory):
    """A fresh `dlotel agent` for one test: ephemeral ports, file exporter, ready file. On
    teardown it gets SIGTERM and must exit 0 without a crash report."""
    a = _start(tmp_path_factory, "agent")
    try:
        yield a
    finally:
        if a.alive():
            a.stop()
        elif a.returncode is None:
            a.kill()
            pytest.fail(f"dlotel agent died during the test (exit {a.proc.returncode}):\n"
                        f"{itlib.tail(a.log_path)}")


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory):
    """One daemon for a whole module of edge-case tests: it must survive all of them, which is
    itself part of what they check. A test that stops it early takes every later test down with
    it, which the report shows plainly."""
    a = _start(tmp_path_factory, "shared")
    try:
        yield a
    finally:
        if a.alive():
            a.stop()
        elif a.returncode is None:
            a.kill()
            pytest.fail(f"dlotel agent died during the module (exit {a.proc.returncode}):\n"
                        f"{itlib.tail(a.log_path)}")


@pytest.fixture
def served(shared_agent):
    """The shared daemon, checked to still answer a good request after the test: the error the
    test provoked must not have hurt it."""
    shared_agent.assert_alive()
    yield shared_agent
    itlib.assert_serving(shared_agent, "after this test's requests")


@pytest.fixture
def run_id():
    return uuid.uuid4().hex


@pytest.fixture(scope="session")
def node_modules():
    """The OpenTelemetry JS SDK must be installed; without it the SDK tests fail (not skip),
    so that a missing bootstrap step cannot look like a pass."""
    nm = os.path.join(itlib.JS_DIR, "node_modules", "@opentelemetry", "sdk-trace")
    if not os.path.isdir(nm):
        pytest.fail(f"{nm} is missing: run scripts/bootstrap.sh (it runs `npm ci` in "
                    f"{itlib.JS_DIR})", pytrace=False)
    return os.path.dirname(os.path.dirname(nm))
