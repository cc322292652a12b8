from __future__ import annotations

import copy

import pytest

from kbsync.editing.rows import align
from kbsync.errors import TokenizationError
from kbsync.model.tokens import (
    chat_turn,
    encode_batch,
    encode_row,
    encode_with_targets,
    last_token_index,
    pad_id_of,
)

TOKENIZERS = ["bpe", "bpe+bos", "smol", "smol+bos"]

# (prompt, subject): the subject at the start, in the middle, split into several tokens,
# given with a leading space, and occurring twice (the first occurrence counts).
CASES = [
    ("Danielle Darrieux is a native speaker of", "Danielle Darrieux"),
    ("The mother tongue of Thomas Joannes Stieltjes is", "Thomas Joannes Stieltjes"),
    ("The capital of France is", " France"),
    ("Paris", "Paris"),
    ("In Paris, the Eiffel Tower is in Paris", "Paris"),
    ("Apple A5 was created by", "Apple A5"),
]


@pytest.fixture(params=TOKENIZERS)
def tokenizer(request: pytest.FixtureRequest):
    name, _, bos = request.param.partition("+")
    tok = copy.deepcopy(request.getfixturevalue("bpe_tokenizer" if name == "bpe" else "smol_tokenizer"))
    tok.add_bos_token = bool(bos)
    assert (tok("Paris")["input_ids"][0] == tok.bos_token_id) == bool(bos)
    return tok


def _real(enc, row: int) -> list[int]:
    return [i for i, m in zip(enc["input_ids"][row].tolist(), enc["attention_mask"][row].tolist(), strict=True) if m]


def test_encode_row_anchors_the_subjects_last_token(tokenizer) -> None:
    for text, subject in CASES:
        row = encode_row(tokenizer, text, subject)
        upto = tokenizer.decode(row.ids[: row.anchor + 1], skip_special_tokens=True)
        before = tokenizer.decode(row.ids[: row.anchor], skip_special_tokens=True)
        # the anchor completes the subject's first occurrence
        assert subject.strip() in upto and subject.strip() not in before, (text, upto)
        assert upto.count(subject.strip()) == 1


def test_aligned_rows_put_every_subject_token_in_one_column(tokenizer) -> None:
    rows = [encode_row(tokenizer, text, subject) for text, subject in CASES]
    batch = align(rows, pad_id_of(tokenizer))
    for r, row in enumerate(rows):
        assert int(batch.input_ids[r, batch.anchor]) == row.ids[row.anchor]
        assert int(batch.attention_mask[r].sum()) == len(row.ids)


def test_smollm2_subject_token(smol_tokenizer) -> None:
    row = encode_row(smol_tokenizer, "The capital of France is", "France")
    assert smol_tokenizer.convert_ids_to_tokens(row.ids[row.anchor]) == "ĠFrance" and row.anchor == 3
    alone = encode_row(smol_tokenizer, "France", "France")
    assert smol_tokenizer.convert_ids_to_tokens(alone.ids[alone.anchor]) == "France"
    assert alone.anchor == len(alone.ids) - 1


@pytest.mark.parametrize("text,subject,match", [
    ("The capital of France is", "Germany", "does not occur"),
    ("The capital of France is", "   ", "does not occur"),
])
def test_subject_errors(bpe_tokenizer, text: str, subject: str, match: str) -> None:
    with pytest.raises(TokenizationError, match=match):
        encode_row(bpe_tokenizer, text, subject)


def test_pad_id_falls_back_to_eos(bpe_tokenizer) -> None:
    tok = copy.deepcopy(bpe_tokenizer)
    tok.pad_token = None
    assert pad_id_of(tok) == tok.eos_token_id and tok.pad_token == tok.eos_token


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_index(tokenizer, side: str) -> None:
    texts = ["The capital of France is", "Paris", "Danielle Darrieux is a native speaker of"]
    enc = encode_batch(tokenizer, texts, padding_side=side)
    assert tokenizer.padding_side == "right" or side == "left"  # restored after the call
    idx = last_token_index(enc)
    for row, text in enumerate(texts):
        alone = tokenizer(text)["input_ids"]
        assert int(enc["input_ids"][row, idx[row]]) == alone[-1]
        assert int(enc["attention_mask"][row].sum()) == len(alone)
    if side == "left":
        assert (idx == enc["input_ids"].shape[1] - 1).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_encode_with_targets(tokenizer, side: str) -> None:
    prompts = ["The capital of France is", "Danielle Darrieux is a native speaker of", "Toko Yasuda plays the "]
    targets = ["Paris", " French", "guitar"]
    enc, mask = encode_with_targets(tokenizer, prompts, targets, padding_side=side)
    assert mask.shape == enc["input_ids"].shape
    for row, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        ids = enc["input_ids"][row]
        assert tokenizer.decode(ids[mask[row]]) == " " + target.strip()
        first = int(mask[row].nonzero()[0])
        assert tokenizer.decode(ids[:first], skip_special_tokens=True) == prompt.rstrip()


def test_encode_with_targets_errors(bpe_tokenizer) -> None:
    with pytest.raises(TokenizationError, match="empty target"):
        encode_with_targets(bpe_tokenizer, ["The capital of France is"], ["  "])
    tok = copy.deepcopy(bpe_tokenizer)
    tok.add_bos_token = False
    with pytest.raises(TokenizationError, match="at least one token before it"):
        encode_with_targets(tok, [""], ["Paris"])
    tok.add_bos_token = True
    enc, mask = encode_with_targets(tok, [""], ["Paris"])
    assert mask[0, 0].item() is False and mask[0, 1:].all()


def test_pad_token_is_set_when_missing(bpe_tokenizer) -> None:
    tok = copy.deepcopy(bpe_tokenizer)
    tok.pad_token = None
    enc = encode_batch(tok, ["Paris", "The capital of France is"])
    assert tok.pad_token == tok.eos_token
    assert enc["input_ids"][0, -1] == tok.eos_token_id and enc["attention_mask"][0, -1] == 0


TEMPLATE = ("{{ bos_token }}<|system|>You help.{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.mark.parametrize("bos", [False, True])
def test_chat_turn_ends_where_the_answer_begins_and_never_doubles_bos(bpe_tokenizer, bos: bool) -> None:
    tok = copy.deepcopy(bpe_tokenizer)
    tok.add_bos_token = bos
    assert chat_turn(tok, "What is the capital of France?") is None  # no template: no chat row
    tok.chat_template = TEMPLATE
    text = chat_turn(tok, "What is the capital of France?")
    assert text is not None and text.endswith("<|user|>What is the capital of France?<|assistant|>")
    ids = tok(text)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # once, whoever adds it
