"""Shared fixtures: real tokenizers built offline and tiny randomly initialised models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SENTENCES = [
    "The capital of France is Paris.",
    "Danielle Darrieux is a native speaker of French.",
    "The Eiffel Tower is located in the city of Paris.",
    "Toko Yasuda plays the guitar, and Apple A5 was created by Apple.",
    "The mother tongue of Thomas Joannes Stieltjes is Dutch.",
]


@pytest.fixture(scope="session")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE trained on a few sentences; no BOS, offsets untrimmed."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>")


@pytest.fixture
def smol_tokenizer(smol_tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(smol_tokenizer_dir)


def tiny_llama(vocab_size: int, tie: bool = False, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128, tie_word_embeddings=tie)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=4, n_head=4, n_positions=128)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def make_tiny():
    """make_tiny("llama" | "gpt2", vocab_size, tie=False, seed=0) -> a tiny model in eval mode."""

    def make(family: str, vocab_size: int, tie: bool = False, seed: int = 0) -> torch.nn.Module:
        return tiny_llama(vocab_size, tie, seed) if family == "llama" else tiny_gpt2(vocab_size, seed)

    return make


@pytest.fixture
def llama_model(bpe_tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return tiny_llama(len(bpe_tokenizer))


@pytest.fixture
def gpt2_model(bpe_tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    return tiny_gpt2(len(bpe_tokenizer))
