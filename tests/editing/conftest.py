from __future__ import annotations

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from kbsync.model.adapters import adapter_for

CORPUS = [
    "Toko Yasuda, the guitar player, lives in Tokyo.",
    "The Eiffel Tower is located in Paris, the capital of France.",
    "Danielle Darrieux speaks French. Edwin of Northumbria is a king.",
    "Apple A5 was created by Apple. Google was founded in California.",
    "The mother tongue of Thomas Joannes Stieltjes is Dutch.",
    "Therefore because I you we they he she it is a was the of in on at to.",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation (and fights other jobs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    return tok


def _sharpen(model):
    """A random model's logits span a fraction of a nat; widen them so edits can be seen."""
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)  # GPT-2 ties it to the embedding: both scale
    return model


def _llama(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      bos_token_id=tokenizer.eos_token_id)
    return _sharpen(LlamaForCausalLM(cfg).eval())


def _gpt2(tokenizer) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=4, n_head=4, n_positions=256, initializer_range=0.1,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                     bos_token_id=tokenizer.eos_token_id)
    return _sharpen(GPT2LMHeadModel(cfg).eval())


@pytest.fixture(params=["llama", "gpt2"])
def tiny(request, tokenizer):
    model = _llama(tokenizer) if request.param == "llama" else _gpt2(tokenizer)
    return model, tokenizer, adapter_for(model)


@pytest.fixture
def tiny_llama(tokenizer):
    model = _llama(tokenizer)
    return model, tokenizer, adapter_for(model)


@pytest.fixture
def tiny_gpt2(tokenizer):
    model = _gpt2(tokenizer)
    return model, tokenizer, adapter_for(model)


@pytest.fixture
def corpus_texts() -> list[str]:
    return list(CORPUS)
