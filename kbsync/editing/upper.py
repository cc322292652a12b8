"""Run the blocks above layer L from cached hidden states, with the prefix's keys/values frozen.

Target optimisation adds delta to the residual stream at the output of block L, at the subject's
last token (column A of an aligned batch, rows.py). Nothing below block L depends on delta, and
by causality no column before A does either, at any layer. So:

1. the lower blocks 0..L run once (a normal forward, stopped after block L);
2. the upper blocks L+1..N-1 run once on columns 0..A-1, recording each layer's attention
   keys/values (the "frozen prefix", a stand-in for HF's KV cache);
3. each optimisation step runs only the upper blocks on columns A..T-1, attending to the frozen
   prefix plus themselves.

The blocks are called directly (their own forward, with an explicit additive 4-D mask, position
ids, and rotary position embeddings from the model's ``rotary_emb`` when it has one, as for
Llama/Mistral/Qwen/NeoX; GPT-2 has absolute positions already in the hidden states). This is
exact: tests compare it with a full forward on tiny Llama and GPT-2 models.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from kbsync.errors import ModelError
from kbsync.model.adapters import ArchitectureAdapter

from .rows import Aligned

_CACHE_ARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


class FrozenPrefix:
    """Duck-typed KV cache: records keys/values once, then prepends them to every new query."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}  # layer_idx -> (B, h, A, hd)
        self.values: dict[int, torch.Tensor] = {}
        self.recording = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recording:
            self.keys[layer_idx], self.values[layer_idx] = key_states.detach(), value_states.detach()
            return key_states, value_states
        if layer_idx not in self.keys:  # no prefix columns at all
            return key_states, value_states
        return (torch.cat([self.keys[layer_idx], key_states], dim=-2),  # (B, h, A+Q, hd)
                torch.cat([self.values[layer_idx], value_states], dim=-2))

    def select(self, rows: torch.Tensor) -> None:
        self.keys = {k: v[rows] for k, v in self.keys.items()}
        self.values = {k: v[rows] for k, v in self.values.items()}

    def get_seq_length(self, layer_idx: int = 0) -> int:
        k = self.keys.get(layer_idx)
        return 0 if k is None else k.shape[-2]


def forward_aligned(model: torch.nn.Module, batch: Aligned) -> None:
    """The model's own forward pass over an aligned batch (for the hooks traced around it)."""
    device = next(model.parameters()).device
    model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
          position_ids=batch.position_ids.to(device), use_cache=False)


def lower_hidden(model: torch.nn.Module, adapter: ArchitectureAdapter, layer: int, batch: Aligned,
                 at_input: bool = False) -> torch.Tensor:
    """Residual stream at the output of block ``layer`` (with `at_input`: at its input) for every
    column: (B, T, d)."""
    from kbsync.model.hooks import Trace

    with torch.no_grad(), Trace(model, adapter.block.format(layer), retain_input=at_input,
                                retain_output=not at_input, stop=True) as t:
        forward_aligned(model, batch)
    out = t.input if at_input else t.output
    return (out[0] if isinstance(out, tuple) else out).detach()


def upper_blocks(model: torch.nn.Module, adapter: ArchitectureAdapter, layer: int,
                 dtype: torch.dtype | None = None) -> list[torch.nn.Module]:
    """Blocks layer+1 .. N-1; with `dtype`, copies held in that precision (the model is not touched)."""
    blocks = [adapter.module(model, adapter.block, i) for i in range(layer + 1, adapter.n_layers)]
    if dtype is None or all(p.dtype == dtype for b in blocks for p in b.parameters()):
        return blocks
    return [copy.deepcopy(b).to(dtype) for b in blocks]


class UpperStack:
    def __init__(self, model: torch.nn.Module, adapter: ArchitectureAdapter, layer: int,
                 hidden: torch.Tensor, batch: Aligned, blocks: list[torch.nn.Module] | None = None,
                 frozen: int | None = None) -> None:
        """`blocks`: the blocks above `layer` to run (default: the model's own; see `upper_blocks`);
        `frozen`: the columns run once and kept as the prefix (default: 0..A-1, A = batch.anchor)."""
        self.blocks = blocks if blocks is not None else upper_blocks(model, adapter, layer)
        base = model.get_submodule(adapter.block.rsplit(".", 2)[0])
        self.rotary = getattr(base, "rotary_emb", None)
        self.anchor = batch.anchor if frozen is None else frozen
        device = hidden.device
        self.real = batch.attention_mask.bool().to(device)  # (B, T)
        self.pos = batch.position_ids.to(device)  # (B, T)
        self.cache = FrozenPrefix()
        params = inspect.signature(self.blocks[0].forward).parameters if self.blocks else {}
        self.cache_arg = next((a for a in _CACHE_ARGS if a in params), None)
        self.takes_pos = "position_ids" in params
        if self.blocks and self.cache_arg is None:
            raise ModelError("this transformers version's decoder blocks take no KV cache argument; "
                             "use transformers>=4.45")
        if self.anchor > 0 and self.blocks:
            with torch.no_grad():
                self._run(hidden[:, : self.anchor], 0)
        self.cache.recording = False
        self.suffix = hidden[:, self.anchor:]  # (B, Q, d) inputs of block L+1 from column A on

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows (edits that stopped early drop out)."""
        rows = rows.to(self.real.device)
        self.real, self.pos, self.suffix = self.real[rows], self.pos[rows], self.suffix[rows]
        self.cache.select(rows)

    def _mask(self, q0: int, q1: int, dtype: torch.dtype) -> torch.Tensor:
        q = torch.arange(q0, q1, device=self.real.device)[:, None]  # (Q, 1) query columns
        k = torch.arange(0, q1, device=self.real.device)[None, :]  # (1, K) key columns
        ok = ((k <= q)[None] & self.real[:, None, :q1]) | (k == q)[None]  # (B, Q, K); pads see themselves
        zero = torch.zeros((), dtype=dtype, device=ok.device)
        return torch.where(ok, zero, torch.finfo(dtype).min)[:, None]  # (B, 1, Q, K)

    def _run(self, x: torch.Tensor, q0: int) -> torch.Tensor:
        q1 = q0 + x.shape[1]
        assert self.cache_arg is not None  # checked in __init__
        kw: dict[str, Any] = {"attention_mask": self._mask(q0, q1, x.dtype), self.cache_arg: self.cache}
        pos = self.pos[:, q0:q1]  # (B, Q)
        if self.takes_pos:
            kw["position_ids"] = pos
        if self.rotary is not None:
            kw["position_embeddings"] = self.rotary(x, pos)
        for block in self.blocks:
            out = block(x, **kw)
            x = out[0] if isinstance(out, tuple) else out
        return x  # (B, Q, d)

    def forward(self, suffix: torch.Tensor) -> torch.Tensor:
        """Hidden states after the last block for columns A..T-1, given block L+1's inputs there."""
        return self._run(suffix, self.anchor)


def run_blocks(model: torch.nn.Module, adapter: ArchitectureAdapter, blocks: list[torch.nn.Module],
               hidden: torch.Tensor, batch: Aligned) -> torch.Tensor:
    """`hidden` (B, T, d), the input of blocks[0] at every column of `batch`, through `blocks`."""
    if not blocks:
        return hidden
    return UpperStack(model, adapter, -1, hidden, batch, blocks, frozen=0).forward(hidden)
