"""Version directories cost the tensors they change (issue 15 #9): the edited tensors in their own
shard, the rest hard links to one shared shard; a serving stack loads the directory as it is;
a rollback to earlier weights links that version's files; export writes standalone copies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from kbsync.model.loading import load_model
from kbsync.versions import store as store_module
from kbsync.versions.store import EDITED_SHARD, INDEX_FILE, SHARED_SHARD, ModelStore, export_version


@pytest.fixture
def store(tiny_tied_dir: Path, tmp_path: Path) -> ModelStore:
    loaded = load_model(str(tiny_tied_dir), state_dir=tmp_path / "state", device="cpu")
    return ModelStore(tmp_path / "state", loaded)


def edit(store: ModelStore, layers: list[int], scale: float) -> None:
    """Stand in for a delta: move the MLP output weights of `layers` (materialise's job in apply)."""
    params = dict(store.loaded.model.named_parameters())
    with torch.no_grad():
        store.materialise([])
        for layer in layers:
            params[store.loaded.adapter.weight_name(layer)].add_(scale)


def version(store: ModelStore, name: str) -> Path:
    return store.write_version(f"{name}-{store.weights_sha256()[:12]}")


def new_bytes(folder: Path) -> int:
    """Bytes only this directory holds (files with no other link)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.stat().st_nlink == 1)


def assert_loads_as_live(store: ModelStore, folder: Path) -> None:
    served = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    live = store.loaded.model.state_dict()
    for name, tensor in served.state_dict().items():
        assert torch.equal(tensor, live[name]), name


def test_a_version_holds_only_its_edited_tensors_and_loads(store: ModelStore) -> None:
    edit(store, [1, 2], 0.01)
    v1 = version(store, "b000001")
    index = json.loads((v1 / INDEX_FILE).read_text())["weight_map"]
    edited = sorted(n for n, f in index.items() if f == EDITED_SHARD)
    assert edited == [store.loaded.adapter.weight_name(i) for i in (1, 2)]
    assert "lm_head.weight" not in index  # tied: saved once, under the embedding's name
    assert (v1 / SHARED_SHARD).stat().st_nlink >= 2 and (v1 / "config.json").stat().st_nlink >= 2
    assert new_bytes(v1) < 0.2 * sum(p.stat().st_size for p in v1.iterdir())
    assert_loads_as_live(store, v1)

    edit(store, [1, 2], -0.02)  # another version with the same edited layers shares the same file
    v2 = version(store, "b000002")
    assert (v2 / SHARED_SHARD).stat().st_ino == (v1 / SHARED_SHARD).stat().st_ino
    assert_loads_as_live(store, v2)


def test_rollback_to_earlier_weights_reuses_that_version(store: ModelStore) -> None:
    edit(store, [1], 0.01)
    v1 = version(store, "b000001")
    edit(store, [1, 3], 0.02)
    version(store, "b000002")
    edit(store, [1], 0.01)  # rolled back to version 1's weights
    r = version(store, "r000002")
    assert sorted(p.name for p in r.iterdir()) == sorted(p.name for p in v1.iterdir())
    assert all((r / p.name).stat().st_ino == p.stat().st_ino for p in v1.iterdir())
    assert new_bytes(r) == 0


def test_export_is_standalone(store: ModelStore, tmp_path: Path) -> None:
    edit(store, [2], 0.01)
    v1 = version(store, "b000001")
    out = export_version(v1, tmp_path / "export")
    assert all(p.stat().st_nlink == 1 for p in out.iterdir())
    assert_loads_as_live(store, out)


def test_copies_where_hard_links_are_impossible(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(src, dst):  # type: ignore[no-untyped-def]
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(store_module.os, "link", cross_device)
    edit(store, [1], 0.01)
    v1 = version(store, "b000001")
    assert all(p.stat().st_nlink == 1 for p in v1.iterdir())
    assert_loads_as_live(store, v1)
    assert os.link is cross_device
