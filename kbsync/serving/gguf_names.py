"""Hugging Face tensor names as GGUF names, from the `gguf` package's own table (the one
llama.cpp's converter uses): model.layers.4.mlp.down_proj.weight -> blk.4.ffn_down.weight.

GGUF stores a (d_out, d_in) matrix with ne = [d_in, d_out]: read as numpy it is (d_out, d_in),
the layout of a torch Linear weight, so a Linear's weight goes in as it is. GPT-2's Conv1D
stores (d_in, d_out) and is transposed first (`as_linear`). llama.cpp's converter permutes
Llama's attn_q/attn_k rows for its rotary layout; kbsync edits only MLP output projections,
which are written unpermuted, and refuses any other edited name (`gguf_name`).
"""

from __future__ import annotations

import gguf
import torch

from kbsync.errors import StateError

# config.model_type -> the GGUF architecture (general.architecture) whose table maps its names
GGUF_ARCHES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
               "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3", "gemma3_text": "gemma3",
               "gpt2": "gpt2", "gptj": "gptj", "gpt_neox": "gptneox", "olmo": "olmo", "olmo2": "olmo2"}
EDITABLE = ("ffn_down",)   # the GGUF tensors kbsync writes


def arch_enum(arch: str) -> gguf.MODEL_ARCH:
    by_name = {name: enum for enum, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise StateError(f"the gguf package has no architecture {arch!r}; upgrade it (`pip install -U gguf`)")
    return by_name[arch]


def gguf_name(hf_name: str, arch: str, n_blocks: int) -> str:
    """The GGUF name of a Hugging Face weight that kbsync edits."""
    table = gguf.get_tensor_name_map(arch_enum(arch), n_blocks)
    name = table.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None or name.split(".")[-2] not in EDITABLE:
        raise StateError(f"cannot place the edited weight {hf_name!r} in a {arch} GGUF (it maps to {name}); "
                         "export --format hf instead")
    return name


def as_linear(weight: torch.Tensor, model_type: str) -> torch.Tensor:
    """A stored weight as (d_out, d_in): GPT-2's Conv1D is stored transposed."""
    return weight.T.contiguous() if model_type == "gpt2" else weight.contiguous()
