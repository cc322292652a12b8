"""Build llama.cpp's `llama-server` from PyPI and cache it: the serving engine of the end-to-end tests.

    python scripts/build_llama_server.py          # prints the binary's path (builds it once)
    python scripts/build_llama_server.py --path   # prints where it goes, builds nothing

PyPI has no wheel that ships llama.cpp's server binary: `llama-cpp-python` is an sdist that
vendors llama.cpp's sources (vendor/llama.cpp, tools/server included). This downloads that
sdist with pip (the only registry these machines reach), builds only the `llama-server`
target with CMake, statically linked, and keeps the binary in
~/.cache/kbsync/llama-server/<version>/ (KBSYNC_CACHE overrides ~/.cache/kbsync), so a
second `make setup` costs nothing. The first build takes about 5 minutes on two quiet cores
(over an hour when they are shared; it runs at -j2).

The CPU back end is built for AVX2 without native tuning (GGML_NATIVE=OFF): the native
build's AMX repack path crashed on these machines' CPUs while loading the bundled model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"   # llama-cpp-python, whose vendor/llama.cpp is built
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def cache_dir() -> Path:
    root = Path(os.environ.get("KBSYNC_CACHE") or Path.home() / ".cache" / "kbsync")
    return root / "llama-server" / VERSION


def binary_path() -> Path:
    return cache_dir() / "llama-server"


def build(jobs: int) -> Path:
    target = binary_path()
    with tempfile.TemporaryDirectory(prefix="kbsync-llama-build-") as tmp:
        work = Path(tmp)
        # 1) the sdist, from PyPI through pip
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={VERSION}", "-d", str(work)], check=True)
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            tar.extractall(work, members=members, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        # 2) configure and build only the server
        build_dir = work / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)],
                       check=True)
        built = next(build_dir.rglob("bin/llama-server"))
        # 3) into the cache, atomically
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", action="store_true", help="print where the binary goes; build nothing")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    args = parser.parse_args()
    if args.path:
        print(binary_path())
        return 0
    if not binary_path().is_file():
        for tool in ("cmake", "c++"):
            if shutil.which(tool) is None:
                print(f"building llama-server needs {tool}: apt-get install cmake g++", file=sys.stderr)
                return 1
        print(f"building llama-server (llama-cpp-python {VERSION}) into {cache_dir()}; "
              "about 5 minutes on two quiet cores...", file=sys.stderr)
        build(args.jobs)
    print(binary_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
