"""A damaged Hugging Face cache is named, with the fix, instead of being taken for "not cached"
(issue 25: `except Exception: pass` in model/loading.py hid it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kbsync.errors import ModelError
from kbsync.model.loading import source_directory

REPO = "Acme/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> Path:
    """A cache laid out as huggingface_hub writes it: blobs, a snapshot of links to them, refs/main."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted(p for p in tiny_model_dir.iterdir() if p.suffix in (".json", ".safetensors"))):
        blob = repo / "blobs" / f"blob{i:02d}"
        shutil.copy(path, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return repo


def test_a_complete_cached_snapshot_is_used(hub_cache: Path, tmp_path: Path) -> None:
    assert source_directory(REPO, tmp_path) == hub_cache / "snapshots" / COMMIT


def test_a_deleted_blob_names_the_file_and_the_fix(hub_cache: Path, tmp_path: Path) -> None:
    link = hub_cache / "snapshots" / COMMIT / "model.safetensors"
    (link.parent / os.readlink(link)).unlink()
    with pytest.raises(ModelError) as err:
        source_directory(REPO, tmp_path)
    message = str(err.value)
    assert str(link) in message and "missing" in message
    assert f"hf cache rm model/{REPO}" in message and str(hub_cache) in message


def test_a_truncated_config_names_the_file(hub_cache: Path, tmp_path: Path) -> None:
    config = hub_cache / "snapshots" / COMMIT / "config.json"
    config.resolve().write_text('{"architectures": ["Llama')
    with pytest.raises(ModelError, match=r"config.json \(not a readable JSON file"):
        source_directory(REPO, tmp_path)


def test_a_ref_to_a_removed_snapshot_is_damage_not_a_missing_model(hub_cache: Path, tmp_path: Path) -> None:
    shutil.rmtree(hub_cache / "snapshots")
    with pytest.raises(ModelError, match=rf"damaged at {hub_cache / 'refs' / 'main'} .*snapshot {COMMIT[:12]}"):
        source_directory(REPO, tmp_path)


def test_an_unreadable_ref_is_named(hub_cache: Path, tmp_path: Path) -> None:
    ref = hub_cache / "refs" / "main"
    ref.unlink()
    ref.mkdir()  # read as a file: IsADirectoryError
    with pytest.raises(ModelError, match=rf"damaged at {ref}"):
        source_directory(REPO, tmp_path)
