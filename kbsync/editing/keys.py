"""Keys k_i (input of W_l at the subject's last token, averaged over the context templates) and
the current residual h_i at the last edited layer (bare prompt), read in one forward pass."""

from __future__ import annotations

import torch

from kbsync.model.adapters import ArchitectureAdapter
from kbsync.model.hooks import TraceDict
from kbsync.model.tokens import pad_id_of

from .request import EditRequest
from .rows import align
from .targets import context_row


@torch.no_grad()
def compute_keys(model: torch.nn.Module, tokenizer, adapter: ArchitectureAdapter,
                 requests: list[EditRequest], templates: list[str], layers: list[int],
                 z_layer: int, batch_rows: int = 256) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Returns ({layer: K (d_in, n)}, h (n, d)) on the model as it is now."""
    n_ctx = len(templates)
    rows = [context_row(tokenizer, tpl, req) for req in requests for tpl in templates]  # edit-major
    names = [adapter.mlp_out_name(layer) for layer in layers]
    block = adapter.block.format(z_layer)
    device = next(model.parameters()).device
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    hs: list[torch.Tensor] = []
    step = max(n_ctx, batch_rows // n_ctx * n_ctx)  # whole edits per chunk
    for s in range(0, len(rows), step):
        batch = align(rows[s:s + step], pad_id_of(tokenizer))
        a = batch.anchor
        with TraceDict(model, [*names, block], retain_input=True, stop=True) as td:
            model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                  position_ids=batch.position_ids.to(device), use_cache=False)
        for layer, name in zip(layers, names, strict=True):
            k = td[name].input[:, a].float()  # (b, d_in)
            keys[layer].append(k.reshape(-1, n_ctx, k.shape[-1]).mean(1))  # (b / n_ctx, d_in)
        out = td[block].output
        out = out[0] if isinstance(out, tuple) else out
        hs.append(out[::n_ctx, a].float())  # (b / n_ctx, d) bare-prompt rows
    return {layer: torch.cat(k).T.contiguous() for layer, k in keys.items()}, torch.cat(hs)
