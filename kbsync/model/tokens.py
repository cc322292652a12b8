"""Tokenisation and token lookup: the pad token, the subject's last token (`encode_row`),
target tokens, last tokens.

Positions are found from character offsets, so they hold for every fast tokenizer: with or
without a BOS token, a leading space merged into the subject's first token (byte-level BPE
"ĠParis", SentencePiece "▁Paris"), and left or right padding. Special tokens (BOS, padding)
have empty spans and never match.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from kbsync.errors import ModelError, TokenizationError


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad token's id; a tokenizer without one gets EOS (or UNK) as its pad token, as most
    causal LMs expect."""
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise TokenizationError("the tokenizer has no pad, eos or unk token; set tokenizer.pad_token")
        tokenizer.pad_token = fallback
    return int(tokenizer.pad_token_id)


@contextmanager
def _padding_side(tokenizer: PreTrainedTokenizerBase, side: str) -> Iterator[None]:
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {side!r}")
    before = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = before


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], padding_side: str,
            offsets: bool) -> BatchEncoding:
    pad_id_of(tokenizer)
    if offsets and not tokenizer.is_fast:
        raise TokenizationError("token positions need a fast tokenizer (a tokenizer.json); "
                                "load the model's tokenizer with use_fast=True")
    with _padding_side(tokenizer, padding_side):
        return tokenizer(list(texts), padding=True, return_tensors="pt",
                         return_attention_mask=True, return_offsets_mapping=offsets)


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str],
                 padding_side: str = "right") -> BatchEncoding:
    """input_ids and attention_mask (B, T) for ``texts``, padded on ``padding_side``."""
    return _encode(tokenizer, texts, padding_side, offsets=False)


def _tokens_overlapping(offsets: torch.Tensor, mask: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Indices of real tokens whose character span overlaps [start, end)."""
    tok_start, tok_end = offsets[:, 0], offsets[:, 1]  # (T,), (T,)
    hit = (tok_start < end) & (tok_end > start) & (tok_end > tok_start) & mask.bool()  # (T,)
    return hit.nonzero().flatten()


@dataclass(frozen=True)
class Row:
    ids: tuple[int, ...]
    anchor: int  # index in ids of the subject's last token


def encode_row(tokenizer: PreTrainedTokenizerBase, text: str, subject: str, start_char: int = 0) -> Row:
    """Tokenise text (special tokens as the tokenizer adds them) and find subject's last token.

    The subject is looked for from ``start_char`` on (so a random prefix that happens to
    contain it is skipped); the last token whose character span overlaps the subject wins,
    which is right with or without BOS and whether the space before a word is part of it.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("the editor needs a fast (Rust) tokenizer for character offsets; "
                         "save the model with a tokenizer.json")
    c0 = text.find(subject, start_char)
    if c0 < 0 or not subject.strip():
        raise TokenizationError(f"subject {subject!r} does not occur in {text!r}; fix the prompt or the label")
    c1 = c0 + len(subject.rstrip())
    enc = tokenizer(text, return_offsets_mapping=True)
    hits = [t for t, (o0, o1) in enumerate(enc["offset_mapping"]) if o1 > o0 and o0 < c1 and o1 > c0]
    if not hits:
        raise TokenizationError(f"subject {subject!r} tokenises to nothing in {text!r}; fix the label")
    return Row(tuple(enc["input_ids"]), hits[-1])


def encode_with_targets(tokenizer: PreTrainedTokenizerBase, prompts: list[str], targets: list[str],
                        padding_side: str = "right") -> tuple[BatchEncoding, torch.Tensor]:
    """Tokenise ``prompt + " " + target`` and mark the tokens of " target".

    Returns the padded batch and target_mask (B, T), True at the target's tokens. The whole
    text is tokenised at once, as the model reads it, so a tokenizer that merges the space
    into the word ("ĠParis") is handled; a token straddling the boundary counts as target.
    """
    assert len(prompts) == len(targets), (len(prompts), len(targets))
    texts, bounds = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        head, tail = prompt.rstrip(), target.strip()
        if not tail:
            raise TokenizationError(f"empty target for prompt {prompt!r}; give the object a label")
        texts.append(f"{head} {tail}")
        bounds.append(len(head))
    enc = _encode(tokenizer, texts, padding_side, offsets=True)
    offsets = enc.pop("offset_mapping")  # (B, T, 2)
    target_mask = torch.zeros(enc["input_ids"].shape, dtype=torch.bool)  # (B, T)
    for row, bound in enumerate(bounds):
        hits = _tokens_overlapping(offsets[row], enc["attention_mask"][row], bound, len(texts[row]))
        if hits.numel() == 0 or hits[0] == 0 or not enc["attention_mask"][row, hits[0] - 1]:
            raise TokenizationError(f"cannot score {targets[row]!r} after {prompts[row]!r}: "
                                    "the target needs at least one token before it (a prompt or BOS)")
        target_mask[row, hits] = True
    return enc, target_mask


def last_token_index(enc: BatchEncoding) -> torch.Tensor:
    """(B,) index of the last real (attention_mask == 1) token of each row, for either padding."""
    mask = enc["attention_mask"]  # (B, T)
    T = mask.shape[1]
    return T - 1 - mask.flip(1).long().argmax(dim=1)  # (B,)


def chat_turn(tokenizer: PreTrainedTokenizerBase, question: str) -> str | None:
    """`question` as a user's turn in the tokenizer's chat template, ending where the assistant's
    answer begins; None for a tokenizer without a template. A BOS the tokenizer adds itself is
    left out of the text, so that encoding it does not double it."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = str(tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True))
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        text = text[len(bos):]
    return text


PLAIN_ANSWER = " The answer is"


def question_forms(tokenizer: PreTrainedTokenizerBase, question: str) -> dict[str, str]:
    """A filled question as people ask it, by form: "plain" ("Who is the head of government of
    Canada? The answer is") and "chat" (`chat_turn`, absent without a template); none for ""."""
    if not question:
        return {}
    forms = {"plain": question + PLAIN_ANSWER}
    if (turn := chat_turn(tokenizer, question)) is not None:
        forms["chat"] = turn
    return forms
