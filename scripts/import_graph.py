"""Print kbsync's package -> package imports (top-level sub-package of each side), and fail
if a layer below the CLI imports `kbsync.cli`.

Example: python scripts/import_graph.py [PATH/TO/kbsync]
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "kbsync"


# Top-level modules that are layers of their own; the rest of kbsync/*.py (errors, config,
# logs, durable, prompts) is "(top)", the base every package may use.
OWN_NODES = {
    "kbsync.__main__": "cli",        # `python -m kbsync` is the CLI's entry point
    "kbsync.docs": "(docs)",         # generates README's tables from the CLI: above it
    "kbsync.runtime": "(runtime)",   # App and the stop, below the CLI and the daemon
}


def package_of(module: str) -> str:
    if module in OWN_NODES:
        return OWN_NODES[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()) else "(top)"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kbsync.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kbsync."):
            found.add(node.module)
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        src = package_of(".".join(rel.parts))
        for target in imports(path):
            dst = package_of(target)
            if dst != src:
                edges[src].add(dst)
    return edges


def main() -> int:
    edges = graph(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT)
    for src in sorted(edges):
        print(f"{src:11} -> {', '.join(sorted(edges[src]))}")
    bad = sorted(src for src, dsts in edges.items() if "cli" in dsts and src not in ("cli", "(docs)"))
    if bad:
        print(f"layer violation: {', '.join(bad)} import kbsync.cli", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
