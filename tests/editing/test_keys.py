from __future__ import annotations

import torch

from kbsync.editing.delta import Delta
from kbsync.editing.keys import LayerKeys, compute_keys
from kbsync.editing.request import EditRequest

REQS = [
    EditRequest("{}, the", "Toko Yasuda", "guitar"),
    EditRequest("The capital of {} is", "France", "Tokyo"),
    EditRequest("Apple A5 was created by", "Apple A5", "Google"),
]
TEMPLATES = ["{}", "It was a long day. {}", "No. {}"]


def test_layer_keys_equal_full_forwards_while_layers_are_edited(tiny):
    """MEMIT's loop: read K at l, edit W_l, read at the next layer. LayerKeys (rows cut at the
    subject, each pass from the input of the last edited block) gives what a full forward of the
    edited model gives, chunk by chunk, and its keys are the final model's keys."""
    model, tok, adapter = tiny
    layers = [1, 2]
    reader = LayerKeys(model, tok, adapter, REQS, TEMPLATES, layers, batch_rows=6)  # 2 chunks
    assert len(reader.batches) == 2
    gen = torch.Generator().manual_seed(0)
    applied = []
    try:
        for layer in layers:
            ref_keys, ref_h = compute_keys(model, tok, adapter, REQS, TEMPLATES, [layer], layers[-1])
            k, h = reader.read(layer)
            torch.testing.assert_close(k, ref_keys[layer], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(h, ref_h, rtol=1e-4, atol=1e-5)
            u = torch.randn(h.shape[1], 2, generator=gen)  # (d_out, 2): a large change of W_l
            v = torch.randn(k.shape[0], 2, generator=gen)  # (d_in, 2)
            applied.append(Delta.from_factors({adapter.weight_name(layer): (u, v)}).apply(model, adapter))
        final_keys, final_h = compute_keys(model, tok, adapter, REQS, TEMPLATES, layers, layers[-1])
        torch.testing.assert_close(reader.residual(), final_h, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(final_h, h, atol=1e-3)  # the last edit moved h
        for layer in layers:
            torch.testing.assert_close(reader.keys[layer], final_keys[layer], rtol=1e-4, atol=1e-5)
    finally:
        for a in reversed(applied):
            a.revert()
