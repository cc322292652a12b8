"""The layering holds: no package below the CLI imports `kbsync.cli` (scripts/import_graph.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


def test_no_lower_layer_imports_the_cli() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    edges = {src.strip(): dst for src, dst in (line.split(" -> ") for line in result.stdout.splitlines())}
    assert "cli" not in edges["daemon"] and "cli" not in edges["sync"].split(", ")
