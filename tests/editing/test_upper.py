from __future__ import annotations

import torch

from kbsync.editing.rows import align
from kbsync.editing.upper import UpperStack, lower_hidden
from kbsync.model.tokens import encode_row, pad_id_of


def test_upper_stack_matches_full_forward(tiny):
    model, tok, adapter = tiny
    texts = [("Toko Yasuda, the guitar player", "Toko Yasuda"),
             ("The capital of France is Paris, the city", "France"),
             ("Apple A5 was created by", "Apple A5")]
    rows = [encode_row(tok, t, s) for t, s in texts]
    batch = align(rows, pad_id_of(tok))
    layer = 1
    hidden = lower_hidden(model, adapter, layer, batch)
    stack = UpperStack(model, adapter, layer, hidden, batch)
    out = stack.forward(stack.suffix)  # (B, Q, d) after the last block
    for r, row in enumerate(rows):
        ids = torch.tensor([row.ids])
        with torch.no_grad():
            ref = model(ids, output_hidden_states=True).hidden_states[-1][0]  # (T, d), final norm applied
        norm = adapter.module(model, adapter.final_norm)
        o = int(batch.offsets[r])
        n_suffix = len(row.ids) - row.anchor
        mine = norm(out[r, :n_suffix])
        torch.testing.assert_close(mine, ref[row.anchor:], rtol=1e-4, atol=1e-5)
    # rows can be dropped and the rest still agree
    keep = torch.tensor([2, 0])
    before = out[keep]
    stack.select(keep)
    torch.testing.assert_close(stack.forward(stack.suffix), before, rtol=1e-5, atol=1e-6)
    assert o >= 0
