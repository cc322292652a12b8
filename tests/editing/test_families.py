"""Every supported family, exact: a tiny random model built from its transformers config (no
download), and each piece kbsync computes outside the model's own forward compared with that
forward (hooks), to float precision:

- the lower hidden states (block outputs read with a stopped forward over an aligned batch);
- the upper stack (blocks called directly, frozen prefix, per-layer masks and rotary tables),
  through the final norm, head and any logit soft cap, against the model's logits;
- the keys over MEMIT's layer loop (LayerKeys) against one hooked forward (compute_keys);
- the edited output at the MLP: what a change of W adds to the residual (through Gemma's and
  OLMo 2's post-MLP norm), and the first-order inverse the solve uses.

Then a small batch of edits must win on each: the new value above the old one for every edit
(efficacy 1.0), log p(new) up, and MEMIT's solve reaching its targets z. A random tiny model needs
both a few steps of training and its own settings for that:
- 40 Adam steps on the six-sentence corpus (lr 1e-2, under a second): a random model's head puts
  the targets 8-16 nats down whatever the residual (400 tokens in 32 dimensions), which no
  clamped delta lifts (target loss 7-16 untrained, 1-3 trained);
- prompts that end at the subject (attention in a small model barely carries an edit to later
  tokens) and a small λ (cov_lambda 1, as test_memit.py);
- no random context prefixes (n_prefixes 0): in a random model a prefix moves the subject's key
  as much as the subject does, so the key averaged over prefixes misses the bare prompt's and
  MEMIT lands 2-4 ||h|| away from z (GPT-2, GPT-J, Falcon: z missed by 3.3 ||h|| with 2 prefixes,
  by 0.00 without);
- ||delta|| <= 1 ||h|| (clamp_factor 1): behind a post-MLP norm (Gemma 2/3, OLMo 2) a layer can
  move the residual only by about the norm's gain, whatever W does; with clamp 4 the target
  is out of reach of two layers (z missed by 1.3-3.0 ||h||; by 0.06-0.3 at clamp 0.5-1).
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from kbsync.editing.covariance import TextFileCorpus, second_moments
from kbsync.editing.hparams import EditHyperParams
from kbsync.editing.keys import LayerKeys, compute_keys
from kbsync.editing.memit import compute_delta
from kbsync.editing.request import EditRequest
from kbsync.editing.rows import align, target_ids
from kbsync.editing.upper import UpperStack, lower_hidden
from kbsync.model.adapters import adapter_for
from kbsync.model.families import (
    FAMILIES,
    MODEL_TYPES,
    mlp_output_change,
    residual_change,
)
from kbsync.model.hooks import TraceDict
from kbsync.model.tokens import encode_row, pad_id_of

_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1)
_GEMMA = dict(_SMALL, head_dim=8, sliding_window=4)

# model_type -> (config class, model class, config kwargs); sliding windows of 4 tokens so the
# test rows (10-20 tokens) really cross them
CONFIGS: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _SMALL),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_SMALL, sliding_window=4)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(_SMALL, use_sliding_window=True, sliding_window=4, max_window_layers=2)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(_SMALL, head_dim=8)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_SMALL, head_dim=8)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(_GEMMA, final_logit_softcapping=5.0, attn_logit_softcapping=20.0)),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                    dict(_GEMMA, layer_types=["sliding_attention", "full_attention"] * 2,
                         rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                          "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_SMALL, sliding_window=None)),
    "phi": ("PhiConfig", "PhiForCausalLM", dict(_SMALL, partial_rotary_factor=0.5)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", _SMALL),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(_SMALL, sliding_window=4)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=4, n_head=4, n_positions=256,
                                                    initializer_range=0.1)),
    "gptj": ("GPTJConfig", "GPTJForCausalLM", dict(n_embd=32, n_layer=4, n_head=4, rotary_dim=4,
                                                    n_positions=256, initializer_range=0.1)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                 dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                      max_position_embeddings=256, initializer_range=0.1)),
    "falcon": ("FalconConfig", "FalconForCausalLM",
               dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, alibi=False,
                    initializer_range=0.1)),
}

TEXTS = [("Toko Yasuda, the guitar player of the band", "Toko Yasuda"),
         ("The capital of France is Paris, the city of light", "France"),
         ("Apple A5 was created by", "Apple A5")]
REQS = [EditRequest("The mother tongue of {}", "Thomas Joannes Stieltjes", "French", "Dutch"),
        EditRequest("The capital of {}", "France", "Tokyo", "Paris"),
        EditRequest("{}", "Apple A5", "Google", "Apple")]


def build(model_type: str, tokenizer) -> torch.nn.Module:
    config_cls, model_cls, kw = CONFIGS[model_type]
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.eos_token_id)
    config = getattr(tf, config_cls)(**ids, **kw)
    config._attn_implementation = "eager"  # the reference: no fused kernel between us and the maths
    torch.manual_seed(0)
    model = getattr(tf, model_cls)(config).eval()
    with torch.no_grad():  # a random model's logits span a fraction of a nat: widen them so edits show
        model.get_output_embeddings().weight.mul_(10.0)
        for name, p in model.named_parameters():  # Gemma-style norms start at zero gain (1 + 0): vary them
            if "norm" in name and p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(params=sorted(CONFIGS))
def family(request, tokenizer):
    model = build(request.param, tokenizer)
    return request.param, model, tokenizer, adapter_for(model)


def test_every_listed_family_is_supported():
    assert set(CONFIGS) <= set(MODEL_TYPES)
    assert {MODEL_TYPES[t] for t in CONFIGS} == set(FAMILIES)


def _batch(tok):
    rows = [encode_row(tok, t, s) for t, s in TEXTS]
    return rows, align(rows, pad_id_of(tok))


@torch.no_grad()
def test_lower_hidden_and_upper_stack_equal_the_models_forward(family):
    model_type, model, tok, adapter = family
    rows, batch = _batch(tok)
    for layer in (0, 1, 2):
        hidden = lower_hidden(model, adapter, layer, batch)  # (B, T, d)
        stack = UpperStack(model, adapter, layer, hidden, batch)
        logits = adapter.logits(model, stack.forward(stack.suffix))  # (B, Q, V)
        for r, row in enumerate(rows):
            ref = model(torch.tensor([row.ids]), output_hidden_states=True)
            o, n = int(batch.offsets[r]), len(row.ids)
            torch.testing.assert_close(hidden[r, o:o + n], ref.hidden_states[layer + 1][0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(logits[r, : n - row.anchor], ref.logits[0, row.anchor:], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_keys_over_the_layer_loop_equal_one_hooked_forward(family):
    model_type, model, tok, adapter = family
    templates = ["{}", "Once upon a time. {}"]
    layers = [1, 2, 3]
    keys, h = compute_keys(model, tok, adapter, REQS, templates, layers, z_layer=3)
    reader = LayerKeys(model, tok, adapter, REQS, templates, layers, batch_rows=4)
    for layer in layers:
        k, h_loop = reader.read(layer)
        torch.testing.assert_close(k, keys[layer], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(h_loop, h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reader.residual(), h, rtol=1e-4, atol=1e-5)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def test_edited_output_at_the_mlp(family):
    """A change dW of layer l's W moves block l's output by residual_change(post norm, W k, dW k),
    at every token; and mlp_output_change inverts that exactly (the nearest change where none is exact)."""
    model_type, model, tok, adapter = family
    _, batch = _batch(tok)
    layer = 1
    block, out_name = adapter.block.format(layer), adapter.mlp_out_name(layer)
    with TraceDict(model, [block, out_name], retain_input=True) as before:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    weight = adapter.as_matrix(adapter.edit_weight(model, layer))  # (d_out, d_in) view
    dw = 0.05 * torch.randn_like(weight)
    weight += dw
    try:
        with TraceDict(model, [block], retain_input=False) as after:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    finally:
        weight -= dw
    real = batch.attention_mask.bool()
    k = before[out_name].input[real]  # (N, d_in) keys at every real token
    o = before[out_name].output[real]  # (N, d_out)
    moved = (_first(after[block].output) - _first(before[block].output))[real]  # (N, d)
    post = adapter.post_norm(model, layer)
    assert (post is not None) == (FAMILIES[adapter.family].post_mlp_norm is not None)
    torch.testing.assert_close(residual_change(post, o, k @ dw.T), moved, rtol=1e-4, atol=1e-5)
    if post is None:
        return
    # the inverse is exact for any change a norm can make, however large: norm(o + do) - norm(o) = r
    u = o + 0.5 * o.norm(dim=-1, keepdim=True) / o.shape[1] ** 0.5 * torch.randn_like(o)  # (N, d) far from o
    r = post(u) - post(o)
    got = residual_change(post, o, mlp_output_change(post, o, r))
    assert float((got - r).norm() / r.norm()) < 1e-3
    # and for one it cannot make (here: norm(o) twice as long), the nearest it can: no farther from the
    # wanted output than norm(o) itself or any of 20 outputs of W k moved at random
    want = 2 * post(o)
    reached = post(o + mlp_output_change(post, o, post(o)))
    miss = (reached - want).norm(dim=-1)  # (N,)
    for _ in range(20):
        other = post(o + 0.3 * o.norm(dim=-1, keepdim=True) / o.shape[1] ** 0.5 * torch.randn_like(o))
        assert bool((miss <= (other - want).norm(dim=-1) + 1e-4).all())
    assert bool((miss <= (post(o) - want).norm(dim=-1) + 1e-4).all())


def _score(model, tok, prompt: str, target: str) -> float:
    p, t = tok(prompt)["input_ids"], target_ids(tok, target)
    with torch.no_grad():
        logp = model(torch.tensor([p + t])).logits[0].log_softmax(-1)
    return float(sum(logp[len(p) - 1 + j, x] for j, x in enumerate(t)) / len(t))


def _train(model, tok, texts: list[str], steps: int = 40) -> None:
    with torch.no_grad():
        model.get_output_embeddings().weight.div_(10.0)  # undo build's sharpening: training sets the scale
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    assert float(loss.detach()) < 1.0, float(loss.detach())


def test_a_small_batch_of_edits_wins(family, tmp_path, corpus_texts):
    model_type, model, tok, adapter = family
    torch.manual_seed(0)
    _train(model, tok, corpus_texts)
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(corpus_texts * 3))
    layers = (1, 2)
    cov = second_moments(model, tok, adapter, layers, TextFileCorpus(path), 18, tmp_path / "cov", model_identity="t")
    hp = EditHyperParams(layers=layers, v_steps=30, v_lr=1.0, n_prefixes=0, clamp_factor=1.0,
                         kl_factor=0.0, cov_lambda=1.0)
    before = [_score(model, tok, r.prompt.format(r.subject), r.target_new) for r in REQS]
    old_before = [_score(model, tok, r.prompt.format(r.subject), r.target_old or "") for r in REQS]
    delta = compute_delta(model, tok, adapter, REQS, hp, cov)
    delta.apply(model, adapter)
    after = [_score(model, tok, r.prompt.format(r.subject), r.target_new) for r in REQS]
    old = [_score(model, tok, r.prompt.format(r.subject), r.target_old or "") for r in REQS]
    gain = [a - b for a, b in zip(after, before, strict=True)]  # nats of log p(target_new)
    # The tiny trained model's numbers differ a little from one CPU to another; where it already
    # preferred the new value (gpt2 on one host: France -> Tokyo), the edit has little to gain.
    behind = [b <= o for b, o in zip(before, old_before, strict=True)]
    assert all(g > 0.5 for g, was_behind in zip(gain, behind, strict=True) if was_behind), (gain, behind)
    assert min(gain) > 0.0, gain
    assert all(a > o for a, o in zip(after, old, strict=True)), (after, old)  # efficacy 1.0
    assert float(delta.meta["z_rel_error_mean"]) < 0.5, delta.meta["z_rel_error_mean"]  # MEMIT reached z
