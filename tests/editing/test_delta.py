from __future__ import annotations

import pytest
import torch

from kbsync.editing.delta import Delta, add_delta_to_state_dict
from kbsync.errors import DeltaIntegrityError


def _delta(model, adapter) -> Delta:
    g = torch.Generator().manual_seed(0)
    updates = {}
    for layer in (1, 2):
        d_out, d_in = adapter.as_matrix(adapter.edit_weight(model, layer)).shape
        updates[adapter.weight_name(layer)] = (torch.randn(d_out, 2, generator=g), torch.randn(d_in, 2, generator=g))
    return Delta.from_factors(updates, meta={"algorithm": "memit"})


def test_apply_then_revert_is_bit_exact(tiny):
    model, _, adapter = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    delta = _delta(model, adapter)
    applied = delta.apply(model, adapter)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert sorted(changed) == delta.names
    applied.revert()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_apply_equals_materialisation(tiny):
    model, _, adapter = tiny
    delta = _delta(model, adapter)
    sd = add_delta_to_state_dict({k: v.clone() for k, v in model.state_dict().items()}, delta, adapter)
    delta.apply(model, adapter)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_dense_where_smaller():
    u, v = torch.randn(4, 10), torch.randn(3, 10)  # rank 10 > what a 4x3 matrix needs
    d = Delta.from_factors({"w": (u, v)})
    assert "w" in d.dense_updates and torch.allclose(d.dense("w"), u @ v.T)


def test_save_load_round_trip_and_tamper(tiny, tmp_path):
    model, _, adapter = tiny
    delta = _delta(model, adapter)
    delta.keys = {2: torch.randn(64 if adapter.family == "llama" else 128, 3)}
    path = tmp_path / "d.safetensors"
    sha = delta.save(path)
    back = Delta.load(path, expected_sha256=sha)
    assert back.names == delta.names and back.meta == delta.meta
    assert all(torch.equal(back.dense(n), delta.dense(n)) for n in delta.names)
    assert torch.equal(back.keys[2], delta.keys[2])
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DeltaIntegrityError):
        Delta.load(path, expected_sha256=sha)
