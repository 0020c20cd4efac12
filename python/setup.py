"""Builds the dlotel Python package with setuptools alone, offline.

    cmake -S . -B build && cmake --build build -j      # the daemon and libdlotel.so
    pip install ./python

The package carries the daemon (`dlotel`) and the library (`libdlotel.so`) built by CMake, in
dlotel/_bin/. They are taken from, in order: $DLOTEL_BUILD_DIR (a CMake build directory),
python/dlotel/_bin/ when `cmake --build build --target python-package-data` filled it, or
../build next to this file. There is deliberately no pyproject.toml: with one, pip builds in an
isolated environment and downloads setuptools first, which fails on a machine without PyPI.
"""

import os
import shutil
import stat

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
BINARIES = (("bin/dlotel", "dlotel"), ("lib/libdlotel.so", "libdlotel.so"))


def find_binaries():
    """(source path, name in _bin) for the daemon and the library, or SystemExit saying how to
    build them."""
    tried = []
    build_dirs = []
    if os.environ.get("DLOTEL_BUILD_DIR"):
        build_dirs.append(os.environ["DLOTEL_BUILD_DIR"])
    bundled = os.path.join(HERE, "dlotel", "_bin")
    if all(os.path.exists(os.path.join(bundled, name)) for _, name in BINARIES) and \
            not os.environ.get("DLOTEL_BUILD_DIR"):
        return [(os.path.join(bundled, name), name) for _, name in BINARIES]
    build_dirs.append(os.path.join(HERE, "..", "build"))
    for d in build_dirs:
        found = [(os.path.join(d, rel), name) for rel, name in BINARIES]
        if all(os.path.exists(src) for src, _ in found):
            return found
        tried.append(os.path.abspath(d))
    raise SystemExit(
        "dlotel: the daemon and libdlotel.so are not built. Build them first:\n"
        "    cmake -S . -B build && cmake --build build -j\n"
        "then `pip install ./python` again (or set DLOTEL_BUILD_DIR to a CMake build directory). "
        f"Looked in: {', '.join(tried)}")


class build_py_with_binaries(build_py):
    """Copies the CMake-built daemon and library into the package, executable bits kept."""

    def run(self):
        super().run()
        if self.dry_run:
            return
        dest = os.path.join(self.build_lib, "dlotel", "_bin")
        os.makedirs(dest, exist_ok=True)
        for src, name in find_binaries():
            target = os.path.join(dest, name)
            # Resolve symlinks (libdlotel.so -> .so.0 -> .so.0.1.0): the wheel gets the file.
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
    package_data={"dlotel": ["_bin/dlotel", "_bin/libdlotel.so", "py.typed"]},
    include_package_data=False,
    zip_safe=False,
    cmdclass=cmdclass,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Monitoring",
    ],
)
