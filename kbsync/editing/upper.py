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
Llama/Mistral/Qwen/NeoX; GPT-2 has absolute positions already in the hidden states). Each block
gets its own layer type's mask (a sliding window on Gemma 2/3, Mistral, sliding Qwen layers) and
rotary table (Gemma 3 keeps one per layer type; model/families.py). This is exact: tests compare
it with the model's own forward for every supported family (tests/model/test_families.py).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from kbsync.errors import ModelError
from kbsync.model.adapters import ArchitectureAdapter
from kbsync.model.families import attention_window, layer_type

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
        config = getattr(model, "config", None)
        ids = range(layer + 1, layer + 1 + len(self.blocks))  # the model layer of each block
        self.types = [layer_type(config, i) for i in ids]  # "full_attention" | "sliding_attention"
        self.windows = [attention_window(config, i) for i in ids]
        rotary_params = inspect.signature(self.rotary.forward).parameters if self.rotary is not None else {}
        self.rotary_per_type = "layer_type" in rotary_params
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

    def _mask(self, q0: int, q1: int, dtype: torch.dtype, window: int | None = None) -> torch.Tensor:
        q = torch.arange(q0, q1, device=self.real.device)[:, None]  # (Q, 1) query columns
        k = torch.arange(0, q1, device=self.real.device)[None, :]  # (1, K) key columns
        seen = k <= q
        if window is not None:  # positions, not columns: left padding does not count
            qp, kp = self.pos[:, q0:q1, None], self.pos[:, None, :q1]  # (B, Q, 1), (B, 1, K)
            seen = seen[None] & (qp - kp < window)  # (B, Q, K)
        ok = (seen & self.real[:, None, :q1]) | (k == q)[None]  # (B, Q, K); pads see themselves
        zero = torch.zeros((), dtype=dtype, device=ok.device)
        return torch.where(ok, zero, torch.finfo(dtype).min)[:, None]  # (B, 1, Q, K)

    def _run(self, x: torch.Tensor, q0: int) -> torch.Tensor:
        q1 = q0 + x.shape[1]
        assert self.cache_arg is not None  # checked in __init__
        kw: dict[str, Any] = {self.cache_arg: self.cache}
        pos = self.pos[:, q0:q1]  # (B, Q)
        if self.takes_pos:
            kw["position_ids"] = pos
        masks = {w: self._mask(q0, q1, x.dtype, w) for w in set(self.windows)}  # one per window size
        rotary: dict[str, Any] = {}  # layer type -> (cos, sin)
        for block, kind, window in zip(self.blocks, self.types, self.windows, strict=True):
            if self.rotary is not None and kind not in rotary:
                rotary[kind] = self.rotary(x, pos, kind) if self.rotary_per_type else self.rotary(x, pos)
            if self.rotary is not None:
                kw["position_embeddings"] = rotary[kind]
            out = block(x, attention_mask=masks[window], **kw)
            x = out[0] if isinstance(out, tuple) else out
        return x  # (B, Q, d)

    def forward(self, suffix: torch.Tensor) -> torch.Tensor:
        """Hidden states after the last block for columns A..T-1, given block L+1's inputs there."""
        return self._run(suffix, self.anchor)


def run_blocks(model: torch.nn.Module, adapter: ArchitectureAdapter, first: int, last: int,
               hidden: torch.Tensor, batch: Aligned) -> torch.Tensor:
    """`hidden` (B, T, d), the input of block `first` at every column of `batch`, through blocks
    first..last of the model."""
    if last < first:
        return hidden
    blocks = [adapter.module(model, adapter.block, j) for j in range(first, last + 1)]
    return UpperStack(model, adapter, first - 1, hidden, batch, blocks, frozen=0).forward(hidden)
