from __future__ import annotations

import pytest
import torch

from kbsync.editing.hparams import EditHyperParams
from kbsync.editing.request import EditRequest
from kbsync.editing.targets import compute_targets, context_templates, edit_rows, group_rows
from kbsync.errors import ModelError

REQS = [
    EditRequest("{}, the", "Toko Yasuda", "guitar"),
    EditRequest("The capital of {} is", "France", "Tokyo"),
    EditRequest("Apple A5 was created by", "Apple A5", "Google"),
]


def _hp(**kw):
    base = dict(layers=(1, 2), v_steps=8, v_lr=0.5, n_prefixes=2, prefix_len=4, early_stop_loss=0.0)
    base.update(kw)
    return EditHyperParams(**base)


def test_templates_are_deterministic(tiny_llama):
    model, tok, _ = tiny_llama
    hp = _hp()
    a = context_templates(model, tok, hp)
    context_templates.__globals__["_TEMPLATE_CACHE"].clear()
    b = context_templates(model, tok, hp)
    assert a == b and a[0] == "{}" and len(a) == 3 and all(t.endswith(". {}") for t in a[1:])


def test_batched_targets_equal_one_at_a_time(tiny):
    model, tok, adapter = tiny
    hp = _hp()
    tpl = context_templates(model, tok, hp)
    together = compute_targets(model, tok, adapter, REQS, hp, tpl)
    for i, req in enumerate(REQS):
        alone = compute_targets(model, tok, adapter, [req], hp, tpl)
        torch.testing.assert_close(alone.z[0], together.z[i], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(alone.h[0], together.h[i], rtol=1e-5, atol=1e-5)
    assert (together.z - together.h).norm(dim=1).min() > 0  # delta moved


def test_early_stopping_is_per_edit_and_clamp_holds(tiny_llama):
    model, tok, adapter = tiny_llama
    hp = _hp(early_stop_loss=1e9, clamp_factor=0.1)  # every edit stops at step 0
    tpl = context_templates(model, tok, hp)
    t = compute_targets(model, tok, adapter, REQS, hp, tpl)
    assert torch.equal(t.z, t.h) and (t.steps == 0).all()
    hp = _hp(clamp_factor=0.1, v_lr=5.0)
    t = compute_targets(model, tok, adapter, REQS, hp, tpl)
    assert ((t.z - t.h).norm(dim=1) <= 0.1 * t.h.norm(dim=1) * (1 + 1e-5)).all()


def test_targets_lower_the_loss(tiny_llama):
    model, tok, adapter = tiny_llama
    hp = _hp(v_steps=15)
    tpl = context_templates(model, tok, hp)
    first = compute_targets(model, tok, adapter, REQS, _hp(v_steps=1), tpl).loss
    last = compute_targets(model, tok, adapter, REQS, hp, tpl).loss
    assert (last < first).all()


def test_batched_equals_single_with_early_stopping(tiny_llama):
    model, tok, adapter = tiny_llama
    tpl = context_templates(model, tok, _hp())
    start = compute_targets(model, tok, adapter, REQS, _hp(v_steps=1), tpl).loss  # losses at delta = 0
    hp = _hp(early_stop_loss=float(start.sort().values[1]) + 1e-4)  # the lowest two stop at once
    together = compute_targets(model, tok, adapter, REQS, hp, tpl)
    assert (together.steps == 0).sum() >= 1 and (together.steps > 0).sum() >= 1
    for i, req in enumerate(REQS):
        alone = compute_targets(model, tok, adapter, [req], hp, tpl)
        assert int(alone.steps[0]) == int(together.steps[i])
        torch.testing.assert_close(alone.z[0], together.z[i], rtol=1e-4, atol=1e-4)


def test_paraphrases_are_optimised_too_and_batched_still_equals_alone(tiny):
    """Paraphrase-aware targets: an edit's paraphrase rows change its delta (not another edit's),
    a paraphrase without the subject is left out, and batching stays exact."""
    model, tok, adapter = tiny
    hp = _hp()
    tpl = context_templates(model, tok, hp)
    plain = REQS[1]
    para = EditRequest(plain.prompt, plain.subject, plain.target_new,
                       paraphrases=("{}'s capital city is", "The capital of Spain is"))
    assert para.paraphrase_texts == ["France's capital city is"]
    without = compute_targets(model, tok, adapter, [REQS[0], plain], hp, tpl)
    with_para = compute_targets(model, tok, adapter, [REQS[0], para], hp, tpl)
    torch.testing.assert_close(with_para.z[0], without.z[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_para.h, without.h, rtol=1e-5, atol=1e-5)
    assert (with_para.z[1] - without.z[1]).norm() > 1e-3
    alone = compute_targets(model, tok, adapter, [para], hp, tpl)
    torch.testing.assert_close(alone.z[0], with_para.z[1], rtol=1e-4, atol=1e-4)


def test_chunks_by_token_budget_give_the_result_of_one_chunk(tiny_llama):
    """Edits are independent: one chunk per edit (budget 1 token) equals all in one chunk."""
    model, tok, adapter = tiny_llama
    tpl = context_templates(model, tok, _hp())
    hp = _hp(early_stop_loss=0.5)
    timings: dict = {}
    one = compute_targets(model, tok, adapter, REQS, hp, tpl, timings)
    assert timings["target_chunks"] == 1
    timings = {}
    each = compute_targets(model, tok, adapter, REQS, hp.replace(max_batch_tokens=1), tpl, timings)
    assert timings["target_chunks"] == len(REQS)
    torch.testing.assert_close(each.z, one.z, rtol=1e-4, atol=1e-4)
    assert torch.equal(each.steps, one.steps)


def test_rows_are_grouped_by_length_after_the_anchor(tiny_llama):
    """Rows of several suffix lengths (prompt remainders, target lengths) in one chunk: every
    group is unpadded after the anchor, and the grouped result equals each edit alone."""
    model, tok, adapter = tiny_llama
    hp = _hp()
    tpl = context_templates(model, tok, hp)
    reqs = [EditRequest("{} is a native speaker of", "Toko Yasuda", "the Dutch language of the Netherlands"),
            EditRequest("{}", "France", "Tokyo")]
    per_edit = [edit_rows(tok, r, hp, tpl) for r in reqs]
    groups, _ = group_rows(model, adapter, hp.layers[-1], per_edit, tok.pad_token_id)
    assert len(groups) >= 2
    lengths = {e.rows[r].ids.__len__() - e.rows[r].anchor for e in per_edit for r in range(len(e.rows))}
    assert {g.stack.suffix.shape[1] for g in groups} == lengths
    together = compute_targets(model, tok, adapter, reqs, hp, tpl)
    for i, req in enumerate(reqs):
        torch.testing.assert_close(compute_targets(model, tok, adapter, [req], hp, tpl).z[0], together.z[i],
                                   rtol=1e-4, atol=1e-4)


def test_bfloat16_products_reach_nearly_the_float32_targets(tiny_llama):
    model, tok, adapter = tiny_llama
    hp = _hp(v_steps=10)
    tpl = context_templates(model, tok, hp)
    exact = compute_targets(model, tok, adapter, REQS, hp, tpl)
    low = compute_targets(model, tok, adapter, REQS, hp.replace(target_dtype="bfloat16"), tpl)
    assert next(model.parameters()).dtype == torch.float32 and low.z.dtype == torch.float32
    torch.testing.assert_close(low.h, exact.h)  # the lower blocks and h stay float32
    moved = (exact.z - exact.h).norm(dim=1)
    assert ((low.z - exact.z).norm(dim=1) < 0.1 * moved).all()


def test_out_of_memory_halves_the_chunk_and_goes_on(tiny_llama, caplog):
    """The CPU allocator's error (raised by a hook on the first upper block whenever it sees more
    rows than one edit has) halves the chunk until it fits; the targets are those of one chunk."""
    model, tok, adapter = tiny_llama
    hp = _hp(early_stop_loss=0.5)
    tpl = context_templates(model, tok, hp)
    one = compute_targets(model, tok, adapter, REQS, hp, tpl)
    limit = max(len(edit_rows(tok, r, hp, tpl).rows) for r in REQS)  # rows of one edit: always fits

    def allocator(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if x.shape[0] > limit:
            raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory: you tried to allocate {2**40} bytes")

    block = adapter.module(model, adapter.block, hp.layers[-1] + 1)
    handle = block.register_forward_pre_hook(allocator, with_kwargs=True)
    try:
        timings: dict = {}
        with caplog.at_level("WARNING", logger="kbsync.editing.targets"):
            halved = compute_targets(model, tok, adapter, REQS, hp, tpl, timings)
        with pytest.raises(ModelError, match="single edit"):
            limit = -1
            compute_targets(model, tok, adapter, REQS[:1], hp, tpl)
    finally:
        handle.remove()
    assert "halving the chunk" in caplog.text and timings["target_chunks"] >= 2
    torch.testing.assert_close(halved.z, one.z, rtol=1e-4, atol=1e-4)


def test_edits_of_one_subject_share_one_delta_and_one_chunk(tiny_llama):
    """MEMIT-Merge: two edits of France are optimised as one delta (z_i - h_i equal), never split over
    chunks, independent of the other edits; with merge_same_subject off each has its own delta."""
    model, tok, adapter = tiny_llama
    hp = _hp(early_stop_loss=0.5)
    tpl = context_templates(model, tok, hp)
    france = [EditRequest("The capital of {} is", "France", "Tokyo"),
              EditRequest("{} is a country in", "France", "Asia")]
    reqs = [france[0], REQS[0], france[1]]  # not adjacent in the request order
    timings: dict = {}
    merged = compute_targets(model, tok, adapter, reqs, hp.replace(max_batch_tokens=1), tpl, timings)
    assert timings["target_chunks"] == 2  # {France, France}, {Toko Yasuda}
    moved = merged.z - merged.h
    torch.testing.assert_close(moved[0], moved[2])
    assert moved[0].norm() > 0 and int(merged.steps[0]) == int(merged.steps[2])
    pair = compute_targets(model, tok, adapter, france, hp, tpl)
    torch.testing.assert_close(pair.z, merged.z[[0, 2]], rtol=1e-4, atol=1e-4)
    alone = compute_targets(model, tok, adapter, [REQS[0]], hp, tpl)
    torch.testing.assert_close(alone.z[0], merged.z[1], rtol=1e-4, atol=1e-4)
    separate = compute_targets(model, tok, adapter, reqs, hp.replace(merge_same_subject=False), tpl)
    assert ((separate.z - separate.h)[0] - (separate.z - separate.h)[2]).norm() > 1e-3
    torch.testing.assert_close(separate.h, merged.h)


def test_asked_rows_are_optimised_on_anchored_in_the_question(tiny):
    """An asked row (the question as people ask it) is one more bare row of the edit, its key read
    at the subject's last occurrence (a chat template's system turn before it may name the subject);
    one without the subject is left out; the other edits' targets do not move."""
    model, tok, adapter = tiny
    hp = _hp()
    tpl = context_templates(model, tok, hp)
    plain = REQS[1]
    chat = "France's guide here.\nUser: What is the capital of France?\nAssistant:"
    asked = EditRequest(plain.prompt, plain.subject, plain.target_new, asked=(chat, "What is the capital of Spain?"))
    assert asked.asked_texts == [chat]
    rows, base = edit_rows(tok, asked, hp, tpl), edit_rows(tok, plain, hp, tpl)
    assert rows.n_rewrite == base.n_rewrite + 1 and len(rows.rows) == len(base.rows) + 1
    row = rows.rows[rows.n_rewrite - 1]
    offsets = tok(chat, return_offsets_mapping=True)["offset_mapping"]
    assert offsets[row.anchor][1] == chat.rfind("France") + len("France")  # the question's France
    without = compute_targets(model, tok, adapter, [REQS[0], plain], hp, tpl)
    with_asked = compute_targets(model, tok, adapter, [REQS[0], asked], hp, tpl)
    torch.testing.assert_close(with_asked.z[0], without.z[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_asked.h, without.h, rtol=1e-5, atol=1e-5)
    assert (with_asked.z[1] - without.z[1]).norm() > 1e-3
