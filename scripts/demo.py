"""`make demo`: the kbsync flow on the embedded defaults (bundled model, demo KB, SQLite)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

KBSYNC = [sys.executable, "-m", "kbsync"]


def step(title: str, *args: str, cwd: Path) -> None:
    print(f"\n$ kbsync {' '.join(args)}    # {title}", flush=True)
    subprocess.run([*KBSYNC, *args], cwd=cwd, check=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="kbsync-demo-"))
    print(f"demo state in {work}")
    step("the commands", "--help", cwd=work)
    step("create the SQLite schema", "db", "upgrade", cwd=work)
    step("what kbsync knows", "status", cwd=work)
    print("\ndemo arrives with the apply pipeline")


if __name__ == "__main__":
    main()
