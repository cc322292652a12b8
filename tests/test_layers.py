"""The import rules hold (scripts/import_graph.py): every package imports only its own layer and
the layers below it, and no two modules import each other, function-local imports included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


def checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_kbsync_keeps_its_layers_and_has_no_import_cycle() -> None:
    graph = checker()
    modules = graph.module_graph()
    assert graph.layer_violations(modules) == []
    assert graph.cycles(modules) == []
    assert "cli" not in graph.graph()["daemon"] and "sync" not in graph.graph()["verification"]


def test_a_function_local_import_cycle_and_an_upward_import_are_caught(tmp_path: Path) -> None:
    pkg = tmp_path / "kbsync"
    for folder in ("store", "sync"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "sync" / "a.py").write_text("from kbsync.sync import b\n")
    (pkg / "sync" / "b.py").write_text("def f():\n    from kbsync.sync.a import x\n")       # hidden in a function
    (pkg / "store" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                        "    from kbsync.sync import a\nimport kbsync.sync.b\n")
    graph = checker()
    modules = graph.module_graph(pkg)
    assert graph.cycles(modules) == [["kbsync.sync.a", "kbsync.sync.b"]]
    assert graph.layer_violations(modules) == ["kbsync.store.c (store) imports kbsync.sync.b (sync), a layer above it"]
    assert graph.main([str(pkg)]) == 1
