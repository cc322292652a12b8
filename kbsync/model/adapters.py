"""Architecture adapters: where a model family keeps the modules that MEMIT reads and edits.

The architecture is data: module names are templates such as ``"model.layers.{}.mlp.down_proj"``
(baukit/ROME style), so a new family is one table entry, and a config can override any name.
The edited matrix W of layer l is the MLP output projection; ``as_matrix`` gives it as
(d_out, d_in) whatever the storage layout (GPT-2's Conv1D stores (d_in, d_out)).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from kbsync.errors import ModelError
from kbsync.model.families import FAMILIES, MODEL_TYPES, check_supported, soft_cap

OVERRIDE_KEYS = ("block", "mlp_out", "final_norm", "unembed", "embed")
# Which layers to edit is a hyper-parameter, not architecture: `editing.hparams.defaults_for`.


@dataclass(frozen=True)
class ArchitectureAdapter:
    family: str  # families.py: "llama" (also Mistral, Qwen 2/3, Phi-3, SmolLM), "gemma3", "gpt2", ...
    block: str  # "model.layers.{}"               transformer block l
    mlp_out: str  # "model.layers.{}.mlp.down_proj"  the edited module; its weight is W
    final_norm: str  # "model.norm"
    unembed: str  # "lm_head"
    embed: str  # "model.embed_tokens"
    conv1d: bool  # True for GPT-2's Conv1D: weight stored (d_in, d_out)
    n_layers: int
    post_mlp_norm: str | None = None  # "model.layers.{}.post_feedforward_layernorm" (Gemma 2/3, OLMo 2)

    def module(self, model: torch.nn.Module, template: str, layer: int | None = None) -> torch.nn.Module:
        name = template.format(layer) if layer is not None else template
        try:
            return model.get_submodule(name)
        except AttributeError as exc:
            raise ModelError(
                f"the model has no module {name!r}; set the [model] keys "
                f"{', '.join(OVERRIDE_KEYS)} in the config to this model's module names"
            ) from exc

    def mlp_out_name(self, layer: int) -> str:
        return self.mlp_out.format(layer)

    def weight_name(self, layer: int) -> str:
        return f"{self.mlp_out_name(layer)}.weight"

    def edit_weight(self, model: torch.nn.Module, layer: int) -> torch.nn.Parameter:
        weight = self.module(model, self.mlp_out, layer).weight
        assert isinstance(weight, torch.nn.Parameter), type(weight)
        return weight

    def post_norm(self, model: torch.nn.Module, layer: int) -> torch.nn.Module | None:
        """The norm W's output passes through before it joins the residual (None: it joins as is)."""
        return None if self.post_mlp_norm is None else self.module(model, self.post_mlp_norm, layer)

    def logits(self, model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The model's logits from the last block's output (..., d): final norm, head, soft cap."""
        out = self.module(model, self.unembed)(self.module(model, self.final_norm)(hidden))
        return soft_cap(getattr(model, "config", None), out)

    def as_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.T if self.conv1d else weight  # (d_out, d_in), a view

    def from_matrix(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.T if self.conv1d else delta  # (d_out, d_in) -> storage layout


def _n_layers(config: Any) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _name_of(model: torch.nn.Module, target: torch.nn.Module | None) -> str | None:
    return next((name for name, m in model.named_modules() if m is target), None)


def adapter_for(model: torch.nn.Module, overrides: dict | None = None) -> ArchitectureAdapter:
    """The adapter for ``model``, from ``config.model_type`` plus any overrides.

    ``overrides`` may set any field; the config's [model] keys block / mlp_out / final_norm /
    unembed / embed arrive here. Unknown architectures need all five module names.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - {f.name for f in fields(ArchitectureAdapter)}
    if unknown:
        raise ModelError(f"unknown model adapter keys {sorted(unknown)}; use {', '.join(OVERRIDE_KEYS)}")

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or "unknown"
    check_supported(model_type, overrides, config)
    n_layers = overrides.get("n_layers") or _n_layers(config)
    if n_layers is None:
        raise ModelError(f"cannot tell how many layers the {model_type!r} model has; set n_layers")

    base: dict[str, Any] = dict(family=model_type, n_layers=n_layers)
    if model_type in MODEL_TYPES:
        fam = FAMILIES[MODEL_TYPES[model_type]]
        base.update(family=fam.name, block=fam.block, mlp_out=fam.mlp_out, final_norm=fam.final_norm,
                    unembed=fam.unembed, embed=fam.embed, post_mlp_norm=fam.post_mlp_norm)
    # transformers renames heads between versions (GPT-NeoX embed_out -> lm_head): ask the model.
    for key, getter in (("embed", "get_input_embeddings"), ("unembed", "get_output_embeddings")):
        found = _name_of(model, getattr(model, getter, lambda: None)())
        if found and key not in overrides:
            base[key] = found
    base.update(overrides)
    probe = ArchitectureAdapter(conv1d=False, **{k: v for k, v in base.items() if k != "conv1d"})
    # Storage layout comes from the module itself, so overridden names stay correct.
    out = probe.module(model, probe.mlp_out, 0)
    conv1d = base.get("conv1d", type(out).__name__ == "Conv1D")
    adapter = replace(probe, conv1d=bool(conv1d))

    adapter.module(model, adapter.block, n_layers - 1)
    for name in (adapter.final_norm, adapter.unembed, adapter.embed):
        adapter.module(model, name)
    if adapter.post_mlp_norm is not None:
        adapter.module(model, adapter.post_mlp_norm, n_layers - 1)
    return adapter
