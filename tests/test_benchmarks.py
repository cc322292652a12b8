"""Every benchmark script imports: the kbsync names it uses still exist (a refactor that breaks
one fails here, not in the next person's benchmark run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def _load(script: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The script as a module: top-level code only (main() runs under __name__ == "__main__")."""
    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load(script, monkeypatch)
    assert hasattr(module, "main") or script.stem.endswith("_kb") or script.stem.endswith("_fixture")


def test_model_paraphrase_filter_keeps_open_phrasings_of_the_subject(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _load(BENCHMARKS[0].parent / "model_paraphrases.py", monkeypatch).kept
    trained = ["The name of the head of government of Canada is", "The current head of government of Canada,"]
    holders = ["Justin Trudeau", "Mark Carney"]
    assert kept("Canada's head of government is", "Canada", trained, holders)
    assert not kept("the name of the head of government of  Canada is", "Canada", trained, holders)  # trained
    assert not kept("The Canadian head of government is", "Canada", trained, holders)  # no subject
    assert not kept("Canada is led by Mark Carney", "Canada", trained, holders)  # answered
    assert not kept("Canada has a head of government.", "Canada", trained, holders)  # closed
    assert not kept("", "Canada", trained, holders)


def test_heldout_editing_overrides_read_json_values(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = _load(BENCHMARKS[0].parent / "heldout_phrasings.py", monkeypatch).editing_overrides
    assert overrides(["early_stop_prob=0.99", "layers=[2,3]", "corpus=model-samples"]) == {
        "early_stop_prob": 0.99, "layers": [2, 3], "corpus": "model-samples"}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        overrides(["early_stop_prob"])
