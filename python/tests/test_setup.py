"""setup.py's build step: what it copies into dlotel/_bin/ from a CMake build tree, and the
builds it refuses. A build tree is made here with real ELF files (cc -shared with the run path
under test), so no CMake build is needed; the real one is installed by
tests/integration/test_launcher.py (test_pip_package_carries_and_uses_the_sink).

    /usr/bin/python3 -m pytest python/tests/test_setup.py
"""

import os
import shutil
import stat
import subprocess
import sys

import pytest

PY_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CC = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler to make ELF files")


def shared_object(path, run_path=None):
    """A real shared object at |path|, with DT_RUNPATH |run_path| when given."""
    src = str(path) + ".c"
    with open(src, "w") as f:
        f.write("int dlotel_setup_test_symbol(void) { return 42; }\n")
    args = [CC, "-shared", "-fPIC", "-o", str(path), src]
    if run_path is not None:
        args.append(f"-Wl,-rpath,{run_path},--enable-new-dtags")
    subprocess.run(args, check=True, timeout=120)
    os.unlink(src)


def make_build(root, module_run_path="$ORIGIN", duckdb=True, sink=True):
    """A CMake-like build tree: bin/dlotel, lib/libdlotel.so (symlinks to the versioned file),
    lib/libdlotel_sink.so, and lib/libduckdb.so as a link to a copy outside the tree, as the
    real build links the bootstrap's DuckDB."""
    build = root / "build"
    (build / "bin").mkdir(parents=True)
    (build / "lib").mkdir()
    shared_object(build / "bin" / "dlotel")
    shared_object(build / "lib" / "libdlotel.so.0.1.0")
    os.symlink("libdlotel.so.0.1.0", build / "lib" / "libdlotel.so.0")
    os.symlink("libdlotel.so.0", build / "lib" / "libdlotel.so")
    if sink:
        shared_object(build / "lib" / "libdlotel_sink.so", module_run_path)
    if duckdb:
        deps = root / "deps"
        deps.mkdir()
        with open(deps / "libduckdb.so", "wb") as f:
            f.write(b"\x7fELF not really DuckDB " * 1000)
        os.chmod(deps / "libduckdb.so", 0o644)
        os.symlink(deps / "libduckdb.so", build / "lib" / "libduckdb.so")
    return build


def build_py(root, build, **env_extra):
    """Runs `setup.py build_py` on a copy of python/ against |build|; (returncode, output,
    the _bin directory it filled)."""
    src = root / "src"
    shutil.copytree(PY_DIR, src, ignore=shutil.ignore_patterns("_bin", "build", "*.egg-info",
                                                               "__pycache__", "tests"))
    out = root / "out"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
           "DLOTEL_BUILD_DIR": str(build), "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(env_extra)
    p = subprocess.run([sys.executable, "setup.py", "build_py", "--build-lib", str(out)],
                       cwd=str(src), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    return p.returncode, p.stdout.decode(), out / "dlotel" / "_bin"


def test_copies_the_sink_and_duckdb_as_real_executable_files(tmp_path):
    build = make_build(tmp_path)
    rc, out, bindir = build_py(tmp_path, build)
    assert rc == 0, out
    names = sorted(os.listdir(bindir))
    assert names == ["dlotel", "libdlotel.so", "libdlotel_sink.so", "libduckdb.so"], names
    for name in names:
        path = bindir / name
        assert path.is_file() and not path.is_symlink(), path
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o111 == 0o111, (name, os.stat(path))
    # The links were followed: the package holds the files themselves.
    with open(bindir / "libduckdb.so", "rb") as a, open(tmp_path / "deps" / "libduckdb.so",
                                                         "rb") as b:
        assert a.read() == b.read()
    with open(bindir / "libdlotel.so", "rb") as a, \
            open(build / "lib" / "libdlotel.so.0.1.0", "rb") as b:
        assert a.read() == b.read()


def test_a_rebuild_drops_files_the_new_build_leaves_out(tmp_path):
    build = make_build(tmp_path)
    rc, out, bindir = build_py(tmp_path, build)
    assert rc == 0, out
    shutil.rmtree(tmp_path / "src")
    rc, out, bindir = build_py(tmp_path, build, DLOTEL_PACKAGE_SINK="0")
    assert rc == 0, out
    assert sorted(os.listdir(bindir)) == ["dlotel", "libdlotel.so"]


def test_forwarding_only_package_needs_no_sink(tmp_path):
    build = make_build(tmp_path, sink=False, duckdb=False)
    rc, out, bindir = build_py(tmp_path, build, DLOTEL_PACKAGE_SINK="0")
    assert rc == 0, out
    assert sorted(os.listdir(bindir)) == ["dlotel", "libdlotel.so"]


def test_missing_sink_module_is_named(tmp_path):
    build = make_build(tmp_path, sink=False)
    rc, out, _ = build_py(tmp_path, build)
    assert rc != 0
    assert "the sink module are not built" in out and "DLOTEL_PACKAGE_SINK=0" in out, out


def test_system_duckdb_is_not_carried(tmp_path):
    """No lib/libduckdb.so: DuckDB is a system library the module finds on the default path."""
    build = make_build(tmp_path, duckdb=False)
    rc, out, bindir = build_py(tmp_path, build)
    assert rc == 0, out
    assert sorted(os.listdir(bindir)) == ["dlotel", "libdlotel.so", "libdlotel_sink.so"]


@pytest.mark.parametrize("run_path", [
    "BUILD/deps",           # a build configured before the module got $ORIGIN: .deps by path
    "$ORIGIN:BUILD/deps",   # $ORIGIN, but the build tree still on the path
    "/opt/duckdb/lib",      # DuckDB carried, yet the module would look elsewhere first
    "$ORIGIN:",             # an empty entry: the daemon's working directory
    None,                   # no run path: the carried DuckDB would never be found
])
def test_module_that_would_not_find_duckdb_beside_itself_is_refused(tmp_path, run_path):
    build_root = tmp_path / "build"
    if run_path is not None:
        run_path = run_path.replace("BUILD", str(build_root))
    build = make_build(tmp_path, module_run_path=run_path)
    rc, out, _ = build_py(tmp_path, build)
    assert rc != 0, out
    assert "libdlotel_sink.so has the run path" in out and "$ORIGIN" in out, out


def test_module_with_origin_then_a_system_directory_is_accepted(tmp_path):
    build = make_build(tmp_path, module_run_path="$ORIGIN:/opt/duckdb/lib")
    rc, out, bindir = build_py(tmp_path, build)
    assert rc == 0, out
    assert (bindir / "libdlotel_sink.so").is_file()
