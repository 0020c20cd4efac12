"""Builds the dlotel Python package with setuptools alone, offline.

    cmake -S . -B build && cmake --build build -j      # the daemon, libdlotel.so, the sink
    pip install ./python

The package carries, in dlotel/_bin/, what CMake built: the daemon (`dlotel`), the library
(`libdlotel.so`), the sink module the daemon loads when it stores telemetry itself
(`libdlotel_sink.so`, the embedded default when nothing else is configured), and the DuckDB that
module links (`libduckdb.so`, when it is the copy scripts/bootstrap.sh fetched rather than a
system library). The module finds DuckDB beside itself through its $ORIGIN run path, and the
daemon finds the module beside itself, so the installed package never reaches into the build
tree. They are taken from, in order: $DLOTEL_BUILD_DIR (a CMake build directory),
python/dlotel/_bin/ when it was filled beforehand, or ../build next to this file.

DLOTEL_PACKAGE_SINK=0 leaves the sink module and DuckDB out (a package of about 1 MB instead of
about 65 MB) for a daemon that only forwards: start() must then be given an upstream, since the
local sink it falls back to is not there.

There is deliberately no pyproject.toml: with one, pip builds in an isolated environment and
downloads setuptools first, which fails on a machine without PyPI.
"""

import os
import shutil
import stat
import struct

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CORE = (("bin/dlotel", "dlotel"), ("lib/libdlotel.so", "libdlotel.so"))
SINK = ("lib/libdlotel_sink.so", "libdlotel_sink.so")
DUCKDB = ("lib/libduckdb.so", "libduckdb.so")


def with_sink():
    return os.environ.get("DLOTEL_PACKAGE_SINK", "1").strip().lower() not in (
        "0", "false", "no", "off")


def elf_run_path(path):
    """The DT_RUNPATH (else DT_RPATH) entries of an ELF file, [] when it has none. Read here,
    not with readelf, so that building the package needs nothing but Python."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise SystemExit(f"dlotel: {path} is not an ELF file")
    end = "<" if data[5] == 1 else ">"
    if data[4] == 2:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        shdr, dyn = end + "IIQQQQIIQQ", end + "qQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        shdr, dyn = end + "IIIIIIIIII", end + "iI"
    sections = [struct.unpack_from(shdr, data, shoff + i * shentsize) for i in range(shnum)]
    found = {}
    for sec in sections:
        if sec[1] != 6:  # SHT_DYNAMIC
            continue
        strtab_off = sections[sec[6]][4]
        step = struct.calcsize(dyn)
        for off in range(sec[4], sec[4] + sec[5], step):
            tag, val = struct.unpack_from(dyn, data, off)
            if tag == 0:  # DT_NULL
                break
            if tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                start = strtab_off + val
                found[tag] = data[start:data.index(b"\0", start)].decode("utf-8", "replace")
    text = found.get(29, found.get(15))
    return text.split(":") if text is not None else []


def check_module_run_path(module, build_dir, carries_duckdb):
    """A module copied out of the build tree must find DuckDB beside itself, not where it was
    built: refuses a run path that names the build tree or the repository (a build configured
    before the module got its $ORIGIN run path), or the current directory (an empty entry)."""
    entries = elf_run_path(module)
    roots = [os.path.realpath(p) + os.sep for p in (build_dir, REPO) if p]
    bad = []
    for e in entries:
        if e.startswith(("$ORIGIN", "${ORIGIN}")):
            continue
        real = os.path.realpath(e) + os.sep if e.startswith("/") else None
        if real is None or any(real.startswith(r) for r in roots):
            bad.append(e or "(empty: the current directory)")
    if bad or (carries_duckdb and entries[:1] not in (["$ORIGIN"], ["${ORIGIN}"])):
        raise SystemExit(
            f"dlotel: {module} has the run path {':'.join(entries) or '(none)'}; the package needs "
            "one that starts with $ORIGIN and does not name the build tree. Re-run cmake on the "
            "build directory and rebuild the dlotel_sink target, then `pip install` again.")


def find_binaries():
    """(source path, name in _bin) for everything the package carries, or SystemExit saying how
    to build what is missing."""
    sink = with_sink()
    wanted = list(CORE) + ([SINK] if sink else [])
    tried = []
    build_dirs = []
    if os.environ.get("DLOTEL_BUILD_DIR"):
        build_dirs.append(os.environ["DLOTEL_BUILD_DIR"])
    bundled = os.path.join(HERE, "dlotel", "_bin")
    if all(os.path.exists(os.path.join(bundled, name)) for _, name in wanted) and \
            not os.environ.get("DLOTEL_BUILD_DIR"):
        found = [(os.path.join(bundled, name), name) for _, name in wanted]
        if sink and os.path.exists(os.path.join(bundled, DUCKDB[1])):
            found.append((os.path.join(bundled, DUCKDB[1]), DUCKDB[1]))
        return found, None
    build_dirs.append(os.path.join(REPO, "build"))
    for d in build_dirs:
        found = [(os.path.join(d, rel), name) for rel, name in wanted]
        if all(os.path.exists(src) for src, _ in found):
            duckdb = os.path.join(d, DUCKDB[0])
            # lib/libduckdb.so is the build's link to the bootstrap's DuckDB; a system DuckDB
            # has none and stays the system's.
            if sink and os.path.exists(duckdb):
                found.append((duckdb, DUCKDB[1]))
            return found, d
        tried.append(os.path.abspath(d))
    raise SystemExit(
        "dlotel: the daemon, libdlotel.so" + (" and the sink module" if sink else "") +
        " are not built. Build them first:\n"
        "    cmake -S . -B build && cmake --build build -j\n"
        "then `pip install ./python` again (or set DLOTEL_BUILD_DIR to a CMake build directory; "
        "DLOTEL_PACKAGE_SINK=0 leaves the sink out). "
        f"Looked in: {', '.join(tried)}")


class build_py_with_binaries(build_py):
    """Copies the CMake-built daemon, library, sink module and DuckDB into the package,
    executable bits kept."""

    def run(self):
        super().run()
        if self.dry_run:
            return
        dest = os.path.join(self.build_lib, "dlotel", "_bin")
        # A previous build of this tree may hold files this one leaves out (the sink).
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        found, build_dir = find_binaries()
        names = [name for _, name in found]
        if SINK[1] in names:
            module = dict((name, src) for src, name in found)[SINK[1]]
            check_module_run_path(module, build_dir, DUCKDB[1] in names)
            if DUCKDB[1] not in names:
                self.announce("dlotel: no libduckdb.so in the build's lib/: the sink module "
                              "will use the system's DuckDB", level=2)
        for src, name in found:
            target = os.path.join(dest, name)
            # Resolve symlinks (libdlotel.so -> .so.0 -> .so.0.1.0, lib/libduckdb.so -> .deps/):
            # the wheel gets the file.
            shutil.copyfile(os.path.realpath(src), target)
            mode = os.stat(target).st_mode
            os.chmod(target, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)


cmdclass = {"build_py": build_py_with_binaries}

try:
    from wheel.bdist_wheel import bdist_wheel

    class bdist_wheel_platform(bdist_wheel):
        """The wheel holds ELF binaries: tag it for this platform, any Python 3."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = bdist_wheel_platform
except ImportError:  # Without wheel, pip falls back to `setup.py install`.
    pass

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="dlotel",
    version="0.1.0",
    description="The Datalayer OpenTelemetry agent: one local OTLP daemon per host, started "
                "from Python",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=["dlotel"],
    package_data={"dlotel": ["_bin/dlotel", "_bin/libdlotel.so", "_bin/libdlotel_sink.so",
                             "_bin/libduckdb.so", "py.typed"]},
    include_package_data=False,
    zip_safe=False,
    cmdclass=cmdclass,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Monitoring",
    ],
)
