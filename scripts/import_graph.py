"""kbsync's import rules, checked: the layer order of its packages, and no import cycle between
its modules. Every import counts, function-local ones included (a local import hides a cycle
from Python, not from a reader); only `if TYPE_CHECKING:` blocks are left out.

    python scripts/import_graph.py            print the package graph; exit 1 on a violation
    python scripts/import_graph.py --modules  also print the module graph

Layers, lowest first: a module may import its own package and the packages below it.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "kbsync"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("(top)",),               # errors, config, logs, durable, prompts, phases: the base everything uses
    ("sources",),             # reading the KB
    ("store",),               # SQL: models, queue, transitions, snapshot, status
    ("(runtime)",),           # App, the worker's name, the two-stage stop
    ("model",),               # loading, probing, scoring, hooks, architecture adapters
    ("editing",),             # MEMIT: targets, keys, solve, deltas; settings -> hyper-parameters
    ("versions",),            # the model under edit, its store, registry, writer, the publish transition
    ("verification",),        # checks, neighbours, damage, the gate, verdicts
    ("serving",),             # the serving engine: GGUF/LoRA exports, the served probe, reload on promote
    ("sync",),                # the flows: diff, apply, rollback, compact, verify, retry
    ("evaluation",),          # `kbsync eval`
    ("research",),            # the lifelong benchmark's code (not run by the service)
    ("dashboard",),
    ("daemon",),
    ("cli",),
    ("(docs)",),              # README's and docs/reference.md's tables, generated from the CLI
)
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
PACKAGES = {name for names in LAYERS for name in names if not name.startswith("(")}

# Top-level modules that are layers of their own; the rest of kbsync/*.py is "(top)".
OWN_NODES = {
    "kbsync.__main__": "cli",        # `python -m kbsync` is the CLI's entry point
    "kbsync.docs": "(docs)",
    "kbsync.runtime": "(runtime)",
}


def package_of(module: str) -> str:
    if module in OWN_NODES:
        return OWN_NODES[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()) or \
        (len(parts) == 2 and parts[1] in PACKAGES) else "(top)"


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, module: str, root: Path = ROOT) -> set[str]:
    """The kbsync modules `path` imports (a package's submodule when `from pkg import name` names one)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node)
            for n in ast.walk(node) if n is not node.test}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kbsync.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            if not base.startswith("kbsync"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if (root.parent / (sub.replace(".", "/") + ".py")).is_file() else base)
    found.discard(module)
    return found


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        edges[name] = {m for m in imports(path, name, root) if m != "kbsync"}
    return edges


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """package -> the packages it imports."""
    out: dict[str, set[str]] = defaultdict(set)
    for src, dsts in module_graph(root).items():
        for dst in dsts:
            if package_of(dst) != package_of(src):
                out[package_of(src)].add(package_of(dst))
    return out


def layer_violations(modules: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, dsts in sorted(modules.items()):
        for dst in sorted(dsts):
            a, b = package_of(src), package_of(dst)
            if a not in RANK or b not in RANK:
                bad.append(f"{src} -> {dst}: package {a if a not in RANK else b!r} has no layer in LAYERS")
            elif RANK[b] > RANK[a]:
                bad.append(f"{src} ({a}) imports {dst} ({b}), a layer above it")
    return bad


def cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~150)
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in modules.get(v, ()):
            if w not in modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return sorted(found)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0]).resolve() if args else ROOT
    modules = module_graph(root)
    for src, dsts in sorted(graph(root).items(), key=lambda kv: RANK.get(kv[0], 99)):
        print(f"{src:13} -> {', '.join(sorted(dsts, key=lambda d: RANK.get(d, 99)))}")
    if "--modules" in argv:
        for src, dsts in sorted(modules.items()):
            print(f"  {src} -> {', '.join(sorted(dsts))}")
    problems = layer_violations(modules) + [f"import cycle: {' <-> '.join(c)}" for c in cycles(modules)]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
