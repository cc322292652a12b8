"""Target vectors z_i = h_i + delta_i for all edits of a batch at once (MEMIT §3.1, ROME's compute_v).

Rows: for edit i, one row per context template ("{}" and "<random prefix>. {}") holding
prompt + target_new[:-1] (teacher forcing), one row per paraphrase of the request in each of the
first `paraphrase_templates` templates (so delta_i also carries the new value when the question is
asked in other words: greedy paraphrase accuracy), plus one row "{subject} is a" for the KL term.
delta_i is added to the residual stream at the output of the last edited layer L, at the
subject's last token of each of edit i's rows. Per step, only the blocks above L run, only on the
columns from the subject's last token on (upper.py), and vocabulary logits are computed only at
the positions the loss reads. Loss of edit i (summed over edits, so each delta_i gets exactly the
gradient it would get alone; Adam is element-wise, so batched == one at a time):

    nll_i  = mean over i's rows (prompt and paraphrase rows) of (-sum_t log p(target_t) / len(target))
    kl_i   = KL(p_new || p_unedited) of the next token after "{subject} is a"
    loss_i = nll_i + kl_factor * kl_i + weight_decay * ||delta_i||^2 / ||h_i||^2

An edit whose loss falls below early_stop_loss (or, with early_stop_prob > 0, whose target's mean
per-token probability exp(-nll_i) reaches early_stop_prob: ENCORE's early stopping, Gupta et al.
2025, which keeps z_i from being over-optimised) is frozen and its rows leave the batch; after
each step ||delta_i|| is clamped to clamp_factor * ||h_i||. ROME computes the KL at the subject's
last token of "{subject} is a"; kbsync reads it where the next token is predicted (the last token).
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kbsync.model.adapters import ArchitectureAdapter
from kbsync.model.tokens import Row, encode_row, pad_id_of

from .hparams import EditHyperParams
from .request import EditRequest
from .rows import align, target_ids
from .upper import UpperStack, lower_hidden

_STARTERS = ("The", "Therefore", "Because", "I", "You")
_TEMPLATE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def batch_seed(requests: Sequence[EditRequest], base: int = 0) -> int:
    """A seed drawn from a batch's content (prompts, subjects, targets, in order), so the batch
    samples the same prefixes in any process: a run resumed after a crash writes bit-identical weights."""
    content = json.dumps([[r.prompt, r.subject, r.target_new] for r in requests], ensure_ascii=False)
    return (int.from_bytes(hashlib.sha256(content.encode()).digest()[:8], "big") + base) % 2**63


def context_templates(model: Any, tokenizer: Any, hp: EditHyperParams, seed: int | None = None) -> list[str]:
    """["{}", "<prefix 1>. {}", ...]: short texts the model writes itself from a fixed seed (ROME).

    With `seed` (a batch's, see `batch_seed`) they are drawn afresh from the model as it is now, never
    from a cache filled while the model held other weights; without it, from hp.prefix_seed, cached.
    """
    key = (hp.n_prefixes, hp.prefix_len, hp.prefix_seed if seed is None else seed)
    per_model: dict = {} if seed is not None else _TEMPLATE_CACHE.setdefault(model, {})
    if key not in per_model:
        device = next(model.parameters()).device
        out = ["{}"]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(key[2])
            for j in range(hp.n_prefixes):
                ids = tokenizer(_STARTERS[j % len(_STARTERS)], return_tensors="pt")["input_ids"].to(device)
                gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=5,
                                     max_new_tokens=hp.prefix_len, min_new_tokens=hp.prefix_len,
                                     pad_token_id=pad_id_of(tokenizer))
                text = tokenizer.decode(gen[0], skip_special_tokens=True)
                out.append(text.replace("{", " ").replace("}", " ") + ". {}")
        per_model[key] = out
    return list(per_model[key])


def context_row(tokenizer, template: str, request: EditRequest, text: str | None = None) -> Row:
    """`template` around the request's prompt (or `text`, e.g. a paraphrase), anchored at the subject."""
    prefix = template[: template.index("{}")]
    return encode_row(tokenizer, prefix + (text or request.text), request.subject, start_char=len(prefix))


@dataclass
class Targets:
    z: torch.Tensor  # (n, d) target residual at layer L, subject's last token
    h: torch.Tensor  # (n, d) the unedited residual there (bare prompt)
    loss: torch.Tensor  # (n,) last loss of each edit
    steps: torch.Tensor  # (n,) optimisation steps taken per edit


def compute_targets(model: torch.nn.Module, tokenizer, adapter: ArchitectureAdapter,
                    requests: list[EditRequest], hp: EditHyperParams, templates: list[str],
                    timings: dict | None = None, check_stop: Callable[[], None] | None = None) -> Targets:
    t0 = time.perf_counter()
    layer, n = hp.layers[-1], len(requests)
    device = next(model.parameters()).device

    # 1) rows: each edit's rewriting rows (edit-major; its bare prompt first), then n KL rows
    rows: list[Row] = []
    edit_of: list[int] = []  # edit of each rewriting row
    bare: list[int] = []  # row of each edit's bare prompt
    label_pos: list[tuple[int, int, int, int]] = []  # (row, token index, label, edit)
    tgt_len = torch.zeros(n)
    n_rows = torch.zeros(n)  # rewriting rows per edit
    for i, req in enumerate(requests):
        tids = target_ids(tokenizer, req.target_new)
        tgt_len[i] = len(tids)
        contexts: list[tuple[str, str | None]] = [(tpl, None) for tpl in templates]
        contexts += [(tpl, text) for text in req.paraphrase_texts for tpl in templates[: hp.paraphrase_templates]]
        bare.append(len(rows))
        for tpl, text in contexts:
            row = context_row(tokenizer, tpl, req, text)
            r = len(rows)
            rows.append(Row(row.ids + tuple(tids[:-1]), row.anchor))
            edit_of.append(i)
            label_pos += [(r, len(row.ids) - 1 + j, t, i) for j, t in enumerate(tids)]
        n_rows[i] = len(contexts)
    kl_first = len(rows)
    for req in requests:
        rows.append(encode_row(tokenizer, hp.kl_prompt.format(req.subject), req.subject))
    batch = align(rows, pad_id_of(tokenizer))
    row_edit = torch.cat([torch.tensor(edit_of, dtype=torch.long), torch.arange(n)])  # (B,)

    # 2) lower blocks once; upper blocks' prefix keys/values once
    hidden = lower_hidden(model, adapter, layer, batch)  # (B, T, d)
    a = batch.anchor
    h = hidden[torch.tensor(bare), a].float()  # (n, d) bare-prompt rows
    stack = UpperStack(model, adapter, layer, hidden, batch)
    norm = adapter.module(model, adapter.final_norm)
    unembed = adapter.module(model, adapter.unembed)
    lp = torch.tensor(label_pos, dtype=torch.long).reshape(-1, 4)
    lp_row, lp_col = lp[:, 0], batch.offsets[lp[:, 0]] + lp[:, 1] - a  # suffix columns
    kl_rows = torch.arange(kl_first, kl_first + n)
    kl_col = batch.offsets[kl_rows] + torch.tensor([len(rows[r].ids) - 1 for r in kl_rows]) - a

    delta = torch.zeros_like(h, requires_grad=True)  # (n, d)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    h_norm = h.norm(dim=1)  # (n,)
    active = torch.ones(n, dtype=torch.bool)
    final = torch.zeros_like(h)
    last_loss, steps = torch.full((n,), float("nan")), torch.zeros(n, dtype=torch.long)
    kl_init: torch.Tensor | None = None  # (n, V) unedited log-probs
    row_map = torch.arange(len(rows))  # full row -> position in the stack's current rows

    for it in range(hp.v_steps):
        if check_stop is not None:
            check_stop()  # may raise: the optimisation is abandoned, nothing was written
        live = active[row_edit]  # (B,) rows still in the stack
        sel = live[lp_row]
        ed = row_edit[row_map >= 0]  # edit of each current row
        # 3) forward of the upper blocks with delta at the subject's last token
        x = stack.suffix.to(delta.dtype).clone()  # (b, Q, d)
        x[:, 0] = x[:, 0] + delta[ed].to(x.dtype)
        out = stack.forward(x.to(stack.suffix.dtype))  # (b, Q, d)
        rw_r, rw_c = row_map[lp_row[sel]], lp_col[sel]
        kr, kc = row_map[kl_rows[active]], kl_col[active]
        gathered = torch.cat([out[rw_r.to(device), rw_c.to(device)], out[kr.to(device), kc.to(device)]])
        logp = torch.log_softmax(unembed(norm(gathered)).float(), dim=-1)  # (P + n_active, V)
        n_rw = int(sel.sum())
        tok_lp = logp[torch.arange(n_rw), lp[sel, 2].to(device)].cpu()  # (P,)
        nll = torch.zeros(n).index_add_(0, lp[sel, 3], -tok_lp) / (tgt_len * n_rows)  # (n,)
        kl_lp = logp[n_rw:].cpu()  # (n_active, V)
        if kl_init is None:
            kl_init = kl_lp.detach().clone()
        kl = torch.zeros(n)
        kl[active] = (kl_lp.exp() * (kl_lp - kl_init[active])).sum(-1)
        wd = (hp.weight_decay * delta.norm(dim=1) ** 2 / h_norm**2).cpu()  # (n,) the loss lives on the CPU
        loss = nll + hp.kl_factor * kl + wd  # (n,) zero-padded for frozen edits
        last_loss[active] = loss.detach()[active]
        steps[active] = it
        # 4) freeze edits that are done; drop their rows
        done = active & (loss.detach() < hp.early_stop_loss)
        if hp.early_stop_prob > 0:  # ENCORE's early stop: the target is likely enough, stop pushing
            done |= active & (torch.exp(-nll.detach()) >= hp.early_stop_prob)
        if it == hp.v_steps - 1:
            done = active.clone()
        final[done] = delta.detach()[done]
        if done.all() or not (active & ~done).any():
            active &= ~done
            break
        opt.zero_grad()
        loss[active & ~done].sum().backward()
        opt.step()
        with torch.no_grad():  # undo Adam's momentum on frozen edits, then clamp to the ball
            delta[~active | done] = final[~active | done]
            scale = (hp.clamp_factor * h_norm / delta.norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
            delta.mul_(scale[:, None])
        if done.any():
            active &= ~done
            keep = active[row_edit] & (row_map >= 0)  # full rows that stay
            stack.select(row_map[keep])
            row_map = torch.full_like(row_map, -1)
            row_map[keep] = torch.arange(int(keep.sum()))
        del live
    if timings is not None:
        timings["targets_s"] = timings.get("targets_s", 0.0) + time.perf_counter() - t0
    return Targets(z=h + final, h=h, loss=last_loss, steps=steps)
