"""A Hugging Face directory as a GGUF file, for the Llama family (Llama, Mistral, SmolLM): the
families whose GGUF layout transformers' own GGUF mapping reads back (tests/serving check it).

    convert_hf(source, dest, precision)

  1) metadata: the architecture's hyper-parameters, from config.json;
  2) the tokenizer: byte-level BPE ("gpt2" model) tokens, types and merges from tokenizer.json,
     special token ids and the chat template (gguf.SpecialVocab);
  3) tensors under gguf's own name table; Q and K rows permuted as llama.cpp's converter does
     (its rotary layout pairs halves, HF interleaves heads); 1-D tensors F32, matrices `precision`;
     a tied lm_head is not written (llama.cpp reuses token_embd).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open

from kbsync.durable import durable_file, follow_umask
from kbsync.errors import StateError
from kbsync.serving.gguf_names import arch_enum

LLAMA_TYPES = ("llama", "mistral")
_NP = {"f32": np.float32, "f16": np.float16}
_FILE_TYPE = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """(n_head * head_dim, d) rows from HF's rotary order to llama.cpp's (convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_hf(source: Path, dest: Path, precision: str = "f32") -> None:
    config = json.loads((source / "config.json").read_text())
    model_type = config.get("model_type", "")
    if model_type not in LLAMA_TYPES:
        raise StateError(f"converting a {model_type!r} Hugging Face model to GGUF is not supported (only "
                         f"{', '.join(LLAMA_TYPES)}); export --format hf or lora, or start from a GGUF base")
    n_layers, n_head = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    with durable_file(dest) as tmp:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(source.name)
        w.add_context_length(int(config.get("max_position_embeddings", 2048)))
        w.add_embedding_length(hidden)
        w.add_block_count(n_layers)
        w.add_feed_forward_length(int(config["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_dimension_count(int(config.get("head_dim") or hidden // n_head))
        w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
        w.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
        w.add_vocab_size(int(config["vocab_size"]))
        w.add_file_type(_FILE_TYPE[precision])
        _tokenizer(w, source, int(config["vocab_size"]))
        names = gguf.get_tensor_name_map(arch_enum("llama"), n_layers)
        for hf_name, tensor in _tensors(source):
            if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
                continue
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise StateError(f"no GGUF name for the tensor {hf_name!r}; export --format hf instead")
            if hf_name.endswith("q_proj.weight"):
                tensor = permute_qk(tensor, n_head)
            elif hf_name.endswith("k_proj.weight"):
                tensor = permute_qk(tensor, n_kv)
            w.add_tensor(name, tensor.astype(np.float32 if tensor.ndim == 1 else _NP[precision]))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    follow_umask(dest)


def _tensors(source: Path):
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise StateError(f"{source} holds no safetensors files; export --format hf instead")
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            for key in sorted(fh.keys()):  # noqa: SIM118
                yield key, fh.get_tensor(key).float().numpy()


def _tokenizer(w: gguf.GGUFWriter, source: Path, vocab_size: int) -> None:
    """Byte-level BPE vocabulary (tokenizer.json) as llama.cpp's "gpt2" tokenizer model."""
    try:
        data = json.loads((source / "tokenizer.json").read_text())
    except OSError as exc:
        raise StateError(f"{source} has no tokenizer.json; a GGUF needs the fast tokenizer's file") from exc
    if data.get("model", {}).get("type") != "BPE":
        raise StateError("only byte-level BPE tokenizers convert to GGUF here; export --format hf instead")
    by_id = {i: t for t, i in data["model"]["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    by_id |= {i: a["content"] for i, a in added.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added.get(i, {}).get("special") else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(source, load_merges=True, n_vocab=vocab_size).add_to_gguf(w, quiet=True)
