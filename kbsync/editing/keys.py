"""Keys k_i (input of W_l at the subject's last token, averaged over the context templates) and
the current residual h_i at the last edited layer L (bare prompt).

compute_keys reads them in one forward pass of the model as it is. LayerKeys reads them over
MEMIT's layer loop, where K at l_i is read after l_0..l_{i-1} have been edited. Only edits below
block j change block j's input, so

    pass 0 runs blocks 0..L; pass i runs blocks l_{i-1}..L from the input of block l_{i-1} that
    pass i-1 kept; the residual after every edit runs block L alone,

and every row stops at the subject's last token (column A, `Aligned.through_anchor`). With
layers 4..8 that is 24 block runs instead of 54, on shorter rows. The keys of pass i are also
the keys at l_i on the fully edited model (every later edit is above l_i).
"""

from __future__ import annotations

import torch

from kbsync.model.adapters import ArchitectureAdapter
from kbsync.model.hooks import TraceDict
from kbsync.model.tokens import pad_id_of

from .request import EditRequest
from .rows import Aligned, align
from .targets import context_row
from .upper import forward_aligned, lower_hidden, run_blocks


def key_batches(tokenizer, requests: list[EditRequest], templates: list[str], batch_rows: int) -> list[Aligned]:
    """Each edit's rows, one per template (edit-major), aligned in chunks of whole edits."""
    n_ctx = len(templates)
    rows = [context_row(tokenizer, tpl, req) for req in requests for tpl in templates]
    step = max(n_ctx, batch_rows // n_ctx * n_ctx)
    return [align(rows[s:s + step], pad_id_of(tokenizer)) for s in range(0, len(rows), step)]


@torch.no_grad()
def compute_keys(model: torch.nn.Module, tokenizer, adapter: ArchitectureAdapter,
                 requests: list[EditRequest], templates: list[str], layers: list[int],
                 z_layer: int, batch_rows: int = 256) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Returns ({layer: K (d_in, n)}, h (n, d)) on the model as it is now."""
    n_ctx = len(templates)
    names = [adapter.mlp_out_name(layer) for layer in layers]
    block = adapter.block.format(z_layer)
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    hs: list[torch.Tensor] = []
    for batch in key_batches(tokenizer, requests, templates, batch_rows):
        a = batch.anchor
        with TraceDict(model, [*names, block], retain_input=True, stop=True) as td:
            forward_aligned(model, batch)
        for layer, name in zip(layers, names, strict=True):
            k = td[name].input[:, a].float()  # (b, d_in)
            keys[layer].append(k.reshape(-1, n_ctx, k.shape[-1]).mean(1))  # (b / n_ctx, d_in)
        out = td[block].output
        out = out[0] if isinstance(out, tuple) else out
        hs.append(out[::n_ctx, a].float())  # (b / n_ctx, d) bare-prompt rows
    return {layer: torch.cat(k).T.contiguous() for layer, k in keys.items()}, torch.cat(hs)


class LayerKeys:
    """K at each edited layer in increasing order, and h at L, on the model as edited so far."""

    def __init__(self, model: torch.nn.Module, tokenizer, adapter: ArchitectureAdapter,
                 requests: list[EditRequest], templates: list[str], layers: list[int],
                 batch_rows: int = 256) -> None:
        self.model, self.adapter, self.n_ctx = model, adapter, len(templates)
        self.z_layer, self.start = layers[-1], layers[0]
        self.batches = [b.through_anchor() for b in key_batches(tokenizer, requests, templates, batch_rows)]
        # per chunk: the input of block `start`, (b, A+1, d)
        self.inputs = [lower_hidden(model, adapter, self.start, b, at_input=True) for b in self.batches]
        self.keys: dict[int, torch.Tensor] = {}  # layer -> (d_in, n), as read

    @torch.no_grad()
    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K at `layer` (d_in, n), h (n, d)); `layer` must not be below the last one read."""
        if layer < self.start:
            raise ValueError(f"keys at layer {layer} after layer {self.start}: read layers in increasing order")
        name = self.adapter.mlp_out_name(layer)
        keys, hs = [], []
        for c, batch in enumerate(self.batches):
            x = run_blocks(self.model, self.adapter, self.start, layer - 1, self.inputs[c], batch)
            with TraceDict(self.model, [name], retain_input=True, retain_output=False) as td:
                out = run_blocks(self.model, self.adapter, layer, self.z_layer, x, batch)
            k = td[name].input[:, batch.anchor].float()  # (b, d_in)
            keys.append(k.reshape(-1, self.n_ctx, k.shape[-1]).mean(1))  # (b / n_ctx, d_in)
            hs.append(out[::self.n_ctx, batch.anchor].float())  # (b / n_ctx, d) bare-prompt rows
            self.inputs[c] = x
        self.start = layer
        self.keys[layer] = torch.cat(keys).T.contiguous()
        return self.keys[layer], torch.cat(hs)

    @torch.no_grad()
    def residual(self) -> torch.Tensor:
        """h (n, d) at L on the model as it is now (after the last read layer's edit)."""
        return torch.cat([run_blocks(self.model, self.adapter, self.start, self.z_layer, x, batch)
                          [::self.n_ctx, batch.anchor].float()
                          for x, batch in zip(self.inputs, self.batches, strict=True)])
