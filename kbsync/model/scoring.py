"""Scoring targets and greedy answers, in padded batches that shrink when memory runs out.

score(o | p) is the CounterFact/ROME/MEMIT convention: the mean per-token log-probability of
" " + o after p under teacher forcing. Greedy generation pads on the left so that every row's
next token sits in the last column.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from kbsync.errors import ModelError
from kbsync.model.tokens import encode_batch, encode_with_targets

DEFAULT_BATCH_SIZE = {"cpu": 32, "cuda": 128}  # starting sizes; halved on OOM (H200: 128 is 3.6x 32)

T = TypeVar("T")
R = TypeVar("R")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def in_batches(fn: Callable[[list[T]], list[R]], items: Sequence[T], batch_size: int | None = None,
               key: Callable[[T], int] | None = None) -> list[R]:
    """``fn`` over ``items`` in batches, results in input order.

    Items are processed longest first (by ``key``) so rows in a batch pad little and an
    out-of-memory error shows up on the first batch; on OOM the batch size halves, and an
    OOM at batch size 1 becomes a ModelError.
    """
    order = sorted(range(len(items)), key=lambda i: -key(items[i])) if key else list(range(len(items)))
    results: list[R | None] = [None] * len(items)
    size, start = max(1, batch_size or DEFAULT_BATCH_SIZE["cpu"]), 0
    while start < len(order):
        chunk = order[start:start + size]
        try:
            out = fn([items[i] for i in chunk])
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size == 1:
                raise ModelError("the model ran out of memory on a single prompt; use a smaller "
                                 "model, dtype = \"bfloat16\", or a device with more memory") from exc
            size //= 2
            continue
        assert len(out) == len(chunk), (len(out), len(chunk))
        for i, r in zip(chunk, out, strict=True):
            results[i] = r
        start += len(chunk)
    return results  # type: ignore[return-value]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batch_size(model: torch.nn.Module, batch_size: int | None) -> int:
    return batch_size or DEFAULT_BATCH_SIZE.get(_device(model).type, DEFAULT_BATCH_SIZE["cpu"])


def _target_logits(model: PreTrainedModel, enc: BatchEncoding, predicts: torch.Tensor) -> torch.Tensor:
    """(n, V) logits at the positions flagged in predicts (B, T-1), in row-major order.

    The vocabulary projection is the costliest layer of a small model: where the model takes
    ``logits_to_keep``, project only the columns that predict a target token.
    """
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return model(**enc).logits[:, :-1][predicts]  # (n, V)
    used = predicts.any(0).nonzero()[:, 0]  # columns that predict some target token
    cols = torch.arange(int(used[0]), int(used[-1]) + 1, device=predicts.device)  # (K,)
    logits = model(**enc, logits_to_keep=cols).logits  # (B, K, V)
    if logits.shape[1] != len(cols):  # an older model class returned every column
        logits = logits[:, cols]
    return logits[predicts[:, cols]]  # (n, V)


@torch.no_grad()
def target_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                    targets: list[str], batch_size: int | None = None) -> torch.Tensor:
    """(N,) mean per-token log-probability of " " + target after each prompt (teacher forcing)."""
    assert len(prompts) == len(targets), (len(prompts), len(targets))

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        enc, target_mask = encode_with_targets(tokenizer, [p for p, _ in pairs], [t for _, t in pairs])
        enc = enc.to(_device(model))
        predicts = target_mask[:, 1:].to(enc["input_ids"].device)  # (B, T-1): position t predicts t+1
        logp = _target_logits(model, enc, predicts).float().log_softmax(-1)  # (n, V)
        token_logp = logp.gather(-1, enc["input_ids"][:, 1:][predicts][:, None])[:, 0]  # (n,)
        rows = predicts.nonzero()[:, 0]  # (n,) row of each target token
        total = torch.zeros(len(pairs), device=logp.device).index_add_(0, rows, token_logp)  # (B,)
        return (total / predicts.sum(1)).tolist()

    pairs = list(zip(prompts, targets, strict=True))
    scores = in_batches(score, pairs, _batch_size(model, batch_size), key=lambda pt: len(pt[0]) + len(pt[1]))
    return torch.tensor(scores, dtype=torch.float32)


@dataclass(frozen=True)
class Generation:
    text: str  # the continuation, special tokens dropped
    token_ids: list[int]  # the generated tokens, up to (not including) EOS / padding
    token_logprobs: list[float]  # log p of each generated token given everything before it


@torch.no_grad()
def greedy_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                    max_new_tokens: int = 8, batch_size: int | None = None) -> list[Generation]:
    """Greedy continuations with the log-probability of every token, left-padded batches."""
    stop = set(_as_list(model.generation_config.eos_token_id)) | {tokenizer.eos_token_id}

    def generate(batch: list[str]) -> list[Generation]:
        enc = encode_batch(tokenizer, batch, padding_side="left").to(_device(model))
        out = model.generate(  # type: ignore[operator]
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True, output_logits=True)
        new = out.sequences[:, enc["input_ids"].shape[1]:]  # (B, n)
        logits = torch.stack(out.logits, dim=1).float()  # (B, n, V)
        logp = logits.log_softmax(-1).gather(-1, new[..., None])[..., 0]  # (B, n)
        gens = []
        for ids, lps in zip(new.tolist(), logp.tolist(), strict=True):
            n = next((j for j, t in enumerate(ids) if t in stop), len(ids))
            # NUL is no text a database stores (PostgreSQL refuses it); a model can still emit it.
            text = str(tokenizer.decode(ids[:n], skip_special_tokens=True)).replace("\x00", "")
            gens.append(Generation(text, ids[:n], lps[:n]))
        return gens

    return in_batches(generate, prompts, _batch_size(model, batch_size), key=len)


def greedy_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                   max_new_tokens: int = 8, batch_size: int | None = None) -> list[str]:
    """The greedy continuation of each prompt (special tokens dropped, whitespace kept)."""
    return [g.text for g in greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size)]


def _as_list(value: int | list[int] | None) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


def perplexity(model, tokenizer, texts: Sequence[str], *, max_tokens: int = 128, batch_size: int = 8) -> float:
    """exp of the mean negative log-likelihood of every token after the first, over all texts
    (each cut to max_tokens tokens): the same texts on two models compare their fluency."""
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = encode_batch(tokenizer, list(texts[i:i + batch_size]), padding_side="right")
            ids = enc["input_ids"][:, :max_tokens].to(device)  # (B, T)
            mask = enc["attention_mask"][:, :max_tokens].to(device)  # (B, T)
            logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)  # (B, T-1, V)
            tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
            real = mask[:, 1:].bool()
            nll -= float(tok[real].sum())
            count += int(real.sum())
    return math.exp(nll / count) if count else float("nan")
