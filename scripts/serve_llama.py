"""Start, or restart, llama.cpp's server on a GGUF model (and optional LoRA adapters): the
[serve] command of a single-host setup, and what the tests and benchmarks/serving.py run.

    python scripts/serve_llama.py --pid-file run/llama.pid --port 8081 MODEL.gguf [--lora ADAPTER.gguf]
    python scripts/serve_llama.py --pid-file run/llama.pid --stop

A server the pid file names is stopped first (SIGTERM, then SIGKILL after 10 s); the new one
runs detached, its output in <pid file>.log, and the script returns once /health answers 200
(exit 1, with the log's tail, if it does not within --wait seconds). As a [serve] command:

    [serve]
    reload = "command"
    export = "gguf"
    command = "python scripts/serve_llama.py --pid-file /run/kbsync/llama.pid --port 8081 {path}"

The binary is --binary, else $KBSYNC_LLAMA_SERVER, else the one scripts/build_llama_server.py built.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_llama_server import binary_path  # noqa: E402


def stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start(binary: Path, model: Path, port: int, pid_file: Path, lora: list[Path], threads: int, ctx: int,
          parallel: int, wait_s: float) -> int:
    args = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(ctx),
            "-t", str(threads), "-np", str(parallel), "--no-webui"]
    for adapter in lora:
        args += ["--lora", str(adapter)]
    log = open(f"{pid_file}.log", "ab")   # noqa: SIM115 - the server keeps writing to it
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if healthy(port):
            print(f"llama-server pid {proc.pid} serving {model.name} on 127.0.0.1:{port}")
            return 0
        time.sleep(0.2)
    tail = Path(f"{pid_file}.log").read_text(errors="replace")[-800:]
    stop(pid_file)
    print(f"llama-server did not become healthy on port {port}: {' '.join(tail.split())}", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--lora", type=Path, action="append", default=[])
    parser.add_argument("--binary", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--parallel", type=int, default=4, help="server slots (requests decoded together)")
    parser.add_argument("--wait", type=float, default=120.0)
    parser.add_argument("--stop", action="store_true")
    a = parser.parse_args()
    stop(a.pid_file)
    if a.stop:
        return 0
    if a.model is None or not a.model.is_file():
        print(f"no GGUF model file {a.model}", file=sys.stderr)
        return 1
    binary = a.binary or Path(os.environ.get("KBSYNC_LLAMA_SERVER") or binary_path())
    if not binary.is_file():
        print(f"no llama-server at {binary}: `make llama-server` builds it", file=sys.stderr)
        return 1
    return start(binary, a.model, a.port, a.pid_file, a.lora, a.threads, a.ctx, a.parallel, a.wait)


if __name__ == "__main__":
    sys.exit(main())
