"""Model families as data: where each keeps the modules MEMIT reads and edits, and how it differs.

One row per family; ``MODEL_TYPES`` maps a config's ``model_type`` (and ``GGUF_ARCHITECTURES`` a
GGUF file's ``general.architecture``) onto it. The differences that decide whether MEMIT's maths
is right, and where kbsync handles each:

- **MLP output read through a norm** (``post_mlp_norm``; Gemma 2/3, OLMo 2): the block adds
  ``norm(W k)``, not ``W k``, to the residual, so a wanted residual change r is turned into a
  change of W's output before the solve (`mlp_output_change`, exact, used by editing/memit.py).
- **Per-layer attention** (Gemma 2/3, Qwen 2/3 with sliding layers, Mistral, Phi-3): a sliding
  window on some layers, and (Gemma 3) a rotary table per layer type; editing/upper.py builds
  each block's mask and position embeddings from `attention_window` and `layer_type`.
- **Soft-capped logits** (Gemma 2; Gemma 3 when its config sets it): `soft_cap` of the logits
  kbsync computes itself (editing/targets.py).
- **Scaled embeddings** (Gemma: ``hidden * sqrt(d)``) and **parallel attention + MLP** (GPT-J,
  GPT-NeoX, Falcon, Phi): nothing to do, because kbsync reads the lower hidden states from the
  model's own forward (hooks) and a parallel block still adds ``W k`` to the residual; the
  exactness tests (tests/model/test_families.py) check both.

A family that kbsync cannot edit exactly (ALiBi attention, mixture-of-experts MLPs, multipliers
on the residual stream) is refused at load in one line (`check_supported`), before any slow step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kbsync.errors import ModelError


@dataclass(frozen=True)
class Family:
    name: str  # also the key of the edit defaults (editing/hparams.py defaults_for)
    block: str  # "model.layers.{}"                transformer block l
    mlp_out: str  # "model.layers.{}.mlp.down_proj"  the edited module; its weight is W
    final_norm: str  # "model.norm"
    unembed: str  # "lm_head"
    embed: str  # "model.embed_tokens"
    post_mlp_norm: str | None = None  # "model.layers.{}.post_feedforward_layernorm": norm(W k) joins the residual
    needed: str = "module names only"  # what the family needed, for docs/models.md


_LLAMA = ("model.layers.{}", "model.layers.{}.mlp.down_proj", "model.norm", "lm_head", "model.embed_tokens")
_POST = "model.layers.{}.post_feedforward_layernorm"

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama", *_LLAMA, needed="module names (Llama, Mistral, Qwen 2/3, Phi-3, OLMo: per-layer sliding "
                                     "windows in the upper stack's mask)"),
    Family("gemma", *_LLAMA, needed="module names; embeddings scaled by sqrt(d) inside the model's own forward"),
    Family("gemma2", *_LLAMA, post_mlp_norm=_POST,
           needed="MLP output read through post_feedforward_layernorm; sliding layers; soft-capped logits"),
    Family("gemma3", *_LLAMA, post_mlp_norm=_POST,
           needed="MLP output read through post_feedforward_layernorm; rotary table per layer type "
                  "(sliding/global); sliding layers"),
    Family("olmo2", *_LLAMA, post_mlp_norm=_POST, needed="MLP output read through post_feedforward_layernorm"),
    Family("phi", "model.layers.{}", "model.layers.{}.mlp.fc2", "model.final_layernorm", "lm_head",
           "model.embed_tokens", needed="module names; parallel attention + MLP"),
    Family("gpt2", "transformer.h.{}", "transformer.h.{}.mlp.c_proj", "transformer.ln_f", "lm_head",
           "transformer.wte", needed="Conv1D weights stored (d_in, d_out); absolute positions"),
    Family("gptj", "transformer.h.{}", "transformer.h.{}.mlp.fc_out", "transformer.ln_f", "lm_head",
           "transformer.wte", needed="module names; parallel attention + MLP"),
    # the head is "lm_head" from transformers 5 on (adapters.py asks the model)
    Family("gpt_neox", "gpt_neox.layers.{}", "gpt_neox.layers.{}.mlp.dense_4h_to_h", "gpt_neox.final_layer_norm",
           "embed_out", "gpt_neox.embed_in", needed="module names; parallel attention + MLP"),
    Family("falcon", "transformer.h.{}", "transformer.h.{}.mlp.dense_4h_to_h", "transformer.ln_f", "lm_head",
           "transformer.word_embeddings", needed="module names; parallel attention + MLP; rotary only (no ALiBi)"),
    Family("starcoder2", "model.layers.{}", "model.layers.{}.mlp.c_proj", "model.norm", "lm_head",
           "model.embed_tokens", needed="module names; sliding window"),
)}

# config.model_type -> family name
MODEL_TYPES = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "phi3": "llama", "olmo": "llama",
    "smollm3": "llama", "gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3",
    "olmo2": "olmo2", "phi": "phi", "gpt2": "gpt2", "gptj": "gptj", "gpt_neox": "gpt_neox", "falcon": "falcon",
    "starcoder2": "starcoder2",
}

# Known families kbsync refuses: why MEMIT's maths is not exact on them, in one clause.
REFUSED = {
    "bloom": "ALiBi attention (biases the upper stack's mask per head)",
    "mpt": "ALiBi attention (biases the upper stack's mask per head)",
    "mixtral": "a mixture-of-experts MLP (no single W per layer)",
    "qwen2_moe": "a mixture-of-experts MLP (no single W per layer)",
    "qwen3_moe": "a mixture-of-experts MLP (no single W per layer)",
    "olmoe": "a mixture-of-experts MLP (no single W per layer)",
    "granite": "multipliers on the residual stream and logits",
    "cohere": "a logit scale and parallel blocks without a final MLP norm",
    "mamba": "no attention or MLP blocks (a state-space model)",
    "rwkv": "no attention or MLP blocks (a recurrent model)",
}

# GGUF general.architecture -> config.model_type (what transformers' GGUF loader builds)
GGUF_ARCHITECTURES = {
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
    "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3_text", "olmo2": "olmo2", "gpt2": "gpt2",
    "gptneox": "gpt_neox", "falcon": "falcon", "starcoder2": "starcoder2", "phi2": "phi",
    "bloom": "bloom", "mpt": "mpt", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "mamba": "mamba",
    "rwkv6": "rwkv", "olmoe": "olmoe", "cohere": "cohere", "command-r": "cohere", "granite": "granite",
}


def check_supported(model_type: str, overrides: dict | None = None, config: Any = None) -> None:
    """One line, before any slow step, for a family kbsync cannot edit exactly or does not know
    (unless the [model] keys name its modules)."""
    overrides = overrides or {}
    if model_type in REFUSED:
        raise ModelError(f"kbsync cannot edit {model_type!r} models exactly: {REFUSED[model_type]}; "
                         f"use a supported family (docs/models.md)")
    if model_type == "falcon" and config is not None and _get(config, "alibi", False):
        raise ModelError("kbsync cannot edit this Falcon model exactly: it uses ALiBi attention; "
                         "use a rotary Falcon or another supported family (docs/models.md)")
    if model_type in MODEL_TYPES:
        return
    missing = [k for k in ("block", "mlp_out", "final_norm", "unembed", "embed") if not overrides.get(k)]
    if missing:
        raise ModelError(f"unknown model architecture {model_type!r}; set the [model] keys block, mlp_out, "
                         f"final_norm, unembed, embed in the config (missing: {', '.join(missing)}), "
                         "or use a supported family (docs/models.md)")


def _get(config: Any, key: str, default: Any = None) -> Any:
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


# --- per-layer attention ---------------------------------------------------------------------


def layer_type(config: Any, layer: int) -> str:
    """"full_attention" or "sliding_attention" for block `layer`."""
    types = _get(config, "layer_types")
    if types:
        return str(types[layer])
    if _get(config, "sliding_window") and _get(config, "model_type") in ("mistral", "phi3", "starcoder2"):
        return "sliding_attention"  # these apply their window to every layer when it is set
    return "full_attention"


def attention_window(config: Any, layer: int) -> int | None:
    """Keys a query of block `layer` may see back (itself included), or None for all."""
    if layer_type(config, layer) != "sliding_attention":
        return None
    window = _get(config, "sliding_window")
    return int(window) if window else None


# --- logits -------------------------------------------------------------------------------


def soft_cap(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """Gemma 2's (and any config's) final_logit_softcapping: cap * tanh(logits / cap)."""
    cap = _get(config, "final_logit_softcapping")
    if not cap:
        return logits
    return torch.tanh(logits / cap) * cap


# --- the MLP output read through a norm -----------------------------------------------------


def _rms(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)


def norm_gain(norm: torch.nn.Module, d: int, device: torch.device) -> torch.Tensor:
    """The per-channel gain g of an RMS norm, read from the module itself (Gemma's is 1 + w,
    OLMo 2's w): norm(x) = g * x / rms(x), so g = norm(1) * rms(1)."""
    ones = torch.ones(1, d, device=device, dtype=next(norm.parameters()).dtype)
    with torch.no_grad():
        return (norm(ones) * _rms(ones, norm)).float()[0]  # (d,)


def mlp_output_change(norm: torch.nn.Module, out: torch.Tensor, resid: torch.Tensor, steps: int = 80) -> torch.Tensor:
    """The change of W's output that moves the residual by `resid` through norm(W k): exact where a norm
    can reach it, else the nearest point it can reach.

    out: (n, d) o = W k now; resid: (n, d) the wanted change of norm(o). norm(o) = g * o / rms(o) forgets
    the scale of o, so it reaches exactly the points y = g * v with rms(v) = 1. For y = norm(o) + resid:

        v* = argmin_{||v||^2 = d} ||g * v - y||^2 = g * y / (g^2 + mu)     (Lagrange multiplier mu)
        do = rms(o) * v* - o                                                 (o's scale kept)

    ||v(mu)||^2 falls as mu grows past -min g^2, so mu is found by bisection. A first-order inverse,
    rms(o) * resid / g, is no use here: Gemma's gains run from 0 to ~10^3 in one norm, and a wanted
    change a few times smaller than norm(o) asked W k to grow 3-30x along near-dead channels (measured
    on Gemma 3 270M: the residual moved at cosine 0.1 to the one wanted; with this, 0.93-1.0). (n, d).
    """
    d = out.shape[-1]
    o = out.double()
    g = norm_gain(norm, d, out.device).double()  # (d,)
    with torch.no_grad():
        y = norm(out.to(next(norm.parameters()).dtype)).double() + resid.double()  # (n, d) the wanted output
    g2, gy = g * g, g * y  # (d,), (n, d)

    def too_long(mu: torch.Tensor) -> torch.Tensor:  # (n, 1): ||v(mu)||^2 > d
        return ((gy / (g2 + mu)) ** 2).sum(-1, keepdim=True) > d

    floor = -float(g2.min()) + 1e-12 * float(g2.max())
    lo = torch.full((len(o), 1), floor, dtype=o.dtype, device=o.device)
    hi = torch.full_like(lo, float(g2.max()))
    while bool((grow := too_long(hi)).any()):
        hi = torch.where(grow, hi * 4, hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        longer = too_long(mid)
        lo, hi = torch.where(longer, mid, lo), torch.where(longer, hi, mid)
    v = gy / (g2 + hi)  # (n, d)
    v = v * (d / (v * v).sum(-1, keepdim=True).clamp(min=1e-300)).sqrt()  # rms(v) = 1 exactly, bisection's rest removed
    return (_rms(o, norm) * v - o).to(out.dtype)


def residual_change(norm: torch.nn.Module | None, out: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """What a change of W's output adds to the residual: norm(out + change) - norm(out) behind a
    post-MLP norm, `change` itself otherwise. (n, d)."""
    if norm is None:
        return change
    with torch.no_grad():
        return norm(out + change) - norm(out)

