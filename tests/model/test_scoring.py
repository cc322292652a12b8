from __future__ import annotations

import copy

import pytest
import torch

from kbsync.errors import ModelError
from kbsync.model.scoring import greedy_answers, greedy_generate, in_batches, target_logprobs

PROMPTS = ["The capital of France is", "Danielle Darrieux is a native speaker of",
           "Toko Yasuda plays the", "Apple A5 was created by"]
TARGETS = ["Paris", "French", "guitar", "Apple and the Eiffel Tower"]


def _reference_score(model, tok, prompt: str, target: str) -> float:
    """One sequence, no padding: log p(target tokens) term by term."""
    n_prompt = len(tok(prompt)["input_ids"])
    ids = tok(f"{prompt} {target}", return_tensors="pt")["input_ids"]  # (1, T)
    logp = model(ids).logits[0].log_softmax(-1)  # (T, V)
    terms = [logp[t - 1, ids[0, t]].item() for t in range(n_prompt, ids.shape[1])]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("bos", [False, True])
def test_target_logprobs_match_one_at_a_time(make_tiny, bpe_tokenizer, family: str, bos: bool) -> None:
    tok = copy.deepcopy(bpe_tokenizer)
    tok.add_bos_token = bos
    model = make_tiny(family, len(tok))
    with torch.no_grad():
        expected = torch.tensor([_reference_score(model, tok, p, t) for p, t in zip(PROMPTS, TARGETS, strict=True)])
    for batch_size in (1, 3, None):
        got = target_logprobs(model, tok, PROMPTS, TARGETS, batch_size=batch_size)
        assert got.shape == (4,) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (expected < 0).all()


def _greedy_reference(model, tok, prompt: str, n: int) -> str:
    ids = tok(prompt, return_tensors="pt")["input_ids"]  # (1, T)
    for _ in range(n):
        nxt = model(ids).logits[0, -1].argmax()
        if nxt == tok.eos_token_id:
            break
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return tok.decode(ids[0, len(tok(prompt)["input_ids"]):], skip_special_tokens=True)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_answers_match_unpadded_greedy(make_tiny, bpe_tokenizer, family: str) -> None:
    model = make_tiny(family, len(bpe_tokenizer))
    with torch.no_grad():
        expected = [_greedy_reference(model, bpe_tokenizer, p, 5) for p in PROMPTS]
    assert greedy_answers(model, bpe_tokenizer, PROMPTS, max_new_tokens=5) == expected
    assert greedy_answers(model, bpe_tokenizer, PROMPTS, max_new_tokens=5, batch_size=1) == expected
    assert bpe_tokenizer.padding_side == "right"


def test_in_batches_halves_on_out_of_memory() -> None:
    sizes = []

    def square(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * x for x in batch]

    items = [3, 1, 4, 1, 5, 9, 2]
    assert in_batches(square, items, batch_size=8, key=lambda x: x) == [x * x for x in items]
    assert sizes == [7, 4, 2, 2, 2, 1]  # 8 -> 4 -> 2, then it stays at 2


def test_in_batches_gives_up_at_batch_size_one() -> None:
    def always(batch: list[int]) -> list[int]:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(ModelError, match="out of memory on a single prompt"):
        in_batches(always, [1, 2, 3], batch_size=4)


def test_in_batches_passes_other_errors_through() -> None:
    def broken(batch: list[int]) -> list[int]:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        in_batches(broken, [1, 2, 3])


def test_generation_logprobs_match_teacher_forcing(make_tiny, bpe_tokenizer) -> None:
    model = make_tiny("gpt2", len(bpe_tokenizer))
    gens = greedy_generate(model, bpe_tokenizer, PROMPTS, max_new_tokens=3)
    for prompt, gen in zip(PROMPTS, gens, strict=True):
        assert len(gen.token_ids) == len(gen.token_logprobs) > 0
        assert bpe_tokenizer.decode(gen.token_ids) == gen.text
        with torch.no_grad():
            ids = torch.tensor([bpe_tokenizer(prompt)["input_ids"] + gen.token_ids])  # (1, T)
            logp = model(ids).logits[0].log_softmax(-1)  # (T, V)
        n = len(gen.token_ids)
        expected = [logp[t - 1, ids[0, t]].item() for t in range(ids.shape[1] - n, ids.shape[1])]
        torch.testing.assert_close(torch.tensor(gen.token_logprobs), torch.tensor(expected),
                                   atol=1e-4, rtol=1e-4)
