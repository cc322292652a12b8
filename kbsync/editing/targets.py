"""Target vectors z_i = h_i + delta_i for all edits of a batch (MEMIT §3.1, ROME's compute_v).

Rows: for edit i, one row per context template ("{}" and "<random prefix>. {}") holding
prompt + target_new[:-1] (teacher forcing), one row per paraphrase of the request in each of the
first `paraphrase_templates` templates (so delta_i also carries the new value when the question is
asked in other words: greedy paraphrase accuracy), one bare row per `asked` text (the relation's
question as people ask it, e.g. in the chat template), plus one row "{subject} is a" for the KL term.
delta_i is added to the residual stream at the output of the last edited layer L, at the
subject's last token of each of edit i's rows. Per step, only the blocks above L run, only on the
columns from the subject's last token on (upper.py), and vocabulary logits are computed only at
the positions the loss reads. Loss of edit i (summed over edits, so each delta_i gets exactly the
gradient it would get alone; Adam is element-wise, so batched == one at a time):

    nll_i  = mean over i's rows (prompt, paraphrase and asked rows) of (-sum_t log p(target_t) / len(target))
    kl_i   = KL(p_new || p_unedited) of the next token after "{subject} is a"
    loss_i = nll_i + kl_factor * kl_i + weight_decay * ||delta_i||^2 / ||h_i||^2

An edit whose loss falls below early_stop_loss (or, with early_stop_prob > 0, whose target's mean
per-token probability exp(-nll_i) reaches early_stop_prob: ENCORE's early stopping, Gupta et al.
2025, which keeps z_i from being over-optimised) is frozen and its rows leave the batch; after
each step ||delta_i|| is clamped to clamp_factor * ||h_i||. ROME computes the KL at the subject's
last token of "{subject} is a"; kbsync reads it where the next token is predicted (the last token).

Edits of one subject (hp.merge_same_subject). MEMIT writes each edit into the subject's key; two
edits of one subject in a batch ask two different values of (nearly) the same key, and the solve
splits the difference, so both may fail (MEMIT-Merge, 2025, reports about 50 % efficacy). So their
rows are optimised with one shared delta_s, on the mean of their losses, until every one of them is
done: z_i = h_i + delta_s, one value that says all the subject's new facts.

Cost and memory. Rows are grouped by the length of their part from the subject's last token on,
so a group's rows need no padding after the anchor (padding there cost half the work on
CounterFact). The upper blocks' matrix products may run in bfloat16 (`target_dtype`; the residual
stream, the logits and delta stay float32). The edits are optimised in chunks of at most
`max_batch_tokens` such tokens, one chunk after the other: the deltas are independent, so the
result is the one of a single chunk, and memory is bounded whatever the batch size. A chunk that
runs out of memory is halved, with a log line, and the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kbsync.errors import ModelError
from kbsync.model.adapters import ArchitectureAdapter
from kbsync.model.scoring import is_out_of_memory
from kbsync.model.tokens import Row, encode_row, pad_id_of

from .hparams import EditHyperParams
from .request import EditRequest
from .rows import align, target_ids
from .upper import UpperStack, lower_hidden, upper_blocks

log = logging.getLogger(__name__)

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


@dataclass
class EditRows:
    """One edit's rows and the positions its loss reads: (row, token index, label); label -1 is the KL row.
    Row 0 is the bare prompt (template "{}"), whose residual at the anchor is h_i."""

    rows: list[Row]
    reads: list[tuple[int, int, int]]
    n_rewrite: int  # rows whose targets enter nll_i
    target_len: int
    subject: str = ""  # edits of one subject share one delta (hp.merge_same_subject)

    @property
    def tokens(self) -> int:
        """Columns from the anchor on, over all rows: what the upper blocks run on."""
        return sum(len(r.ids) - r.anchor for r in self.rows)


def edit_rows(tokenizer, request: EditRequest, hp: EditHyperParams, templates: list[str]) -> EditRows:
    tids = target_ids(tokenizer, request.target_new)
    contexts: list[tuple[str, str | None]] = [(tpl, None) for tpl in templates]
    contexts += [(tpl, text) for text in request.paraphrase_texts for tpl in templates[: hp.paraphrase_templates]]
    prompts = [context_row(tokenizer, tpl, request, text) for tpl, text in contexts]
    # the asked rows, bare: the subject's last occurrence is in the question (a chat template's
    # system turn before it may name the subject too)
    prompts += [encode_row(tokenizer, text, request.subject, start_char=text.rfind(request.subject))
                for text in request.asked_texts]
    rows: list[Row] = []
    reads: list[tuple[int, int, int]] = []
    for row in prompts:
        reads += [(len(rows), len(row.ids) - 1 + j, t) for j, t in enumerate(tids)]
        rows.append(Row(row.ids + tuple(tids[:-1]), row.anchor))
    kl = encode_row(tokenizer, hp.kl_prompt.format(request.subject), request.subject)
    reads.append((len(rows), len(kl.ids) - 1, -1))
    rows.append(kl)
    return EditRows(rows, reads, n_rewrite=len(prompts), target_len=len(tids), subject=request.subject)


def compute_targets(model: torch.nn.Module, tokenizer, adapter: ArchitectureAdapter,
                    requests: list[EditRequest], hp: EditHyperParams, templates: list[str],
                    timings: dict | None = None, check_stop: Callable[[], None] | None = None) -> Targets:
    """All edits' targets, chunk after chunk of at most hp.max_batch_tokens upper-block tokens
    (an edit's subject group is never split: its edits share one delta)."""
    per_edit = [edit_rows(tokenizer, req, hp, templates) for req in requests]
    owners = delta_owners(per_edit, hp.merge_same_subject)
    order = sorted(range(len(per_edit)), key=lambda i: owners[i])  # stable: a subject's edits side by side
    per_edit = [per_edit[i] for i in order]
    owners = [owners[i] for i in order]
    blocks = upper_blocks(model, adapter, hp.layers[-1], torch.bfloat16 if hp.target_dtype == "bfloat16" else None)
    parts: list[Targets] = []
    budget, start = hp.max_batch_tokens, 0
    while start < len(per_edit):
        end = chunk_end(per_edit, start, budget, owners)
        try:
            parts.append(optimise(model, tokenizer, adapter, per_edit[start:end], hp, blocks, check_stop,
                                  owners[start:end]))
        except (RuntimeError, MemoryError, torch.OutOfMemoryError) as exc:
            if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if owners[start] == owners[end - 1]:
                raise ModelError("out of memory optimising a single edit's target (or one subject's); set [editing] "
                                 "target_dtype = \"bfloat16\" or use a device with more memory") from exc
            budget = min(budget, sum(e.tokens for e in per_edit[start:end])) // 2
            log.warning("out of memory optimising %d edits' targets; halving the chunk to %d tokens and going on",
                        end - start, budget)
            continue
        start = end
    if timings is not None:
        timings["target_chunks"] = timings.get("target_chunks", 0) + len(parts)
        timings["target_steps"] = timings.get("target_steps", 0) + int(sum(int(p.steps.sum()) + len(p.steps) for p in parts))
    back = torch.tensor(order).argsort()  # request order again
    joined = (torch.cat([getattr(p, f) for p in parts]) for f in ("z", "h", "loss", "steps"))
    return Targets(*(t[back.to(t.device)] for t in joined))


def delta_owners(per_edit: list[EditRows], merge: bool) -> list[int]:
    """The delta each edit is optimised in: with `merge`, one per subject (first-seen order), so that
    edits of one subject in a batch push its key towards one value instead of fighting over it
    (MEMIT-Merge, 2025); else one per edit."""
    if not merge:
        return list(range(len(per_edit)))
    first: dict[str, int] = {}
    return [first.setdefault(e.subject, len(first)) for e in per_edit]


def chunk_end(per_edit: list[EditRows], start: int, budget: int, owners: list[int] | None = None) -> int:
    """End of the chunk from `start`: as many edits as fit in `budget` tokens, at least one, and never
    a part of the edits that share a delta (`owners`, adjacent)."""
    owners = owners if owners is not None else list(range(len(per_edit)))
    end, used = start, 0
    while end < len(per_edit) and (end == start or used + per_edit[end].tokens <= budget
                                   or owners[end] == owners[end - 1]):
        used += per_edit[end].tokens
        end += 1
    return end


@dataclass
class RowGroup:
    """Rows with the same number of columns from the anchor on: one aligned batch, no padding after
    the anchor, and the upper blocks' frozen prefix (upper.py). `reads` are (row, column, label, edit)."""

    stack: UpperStack
    row_edit: torch.Tensor  # (b,) edit of each row
    reads: torch.Tensor  # (p, 4) long

    def keep(self, active: torch.Tensor) -> None:
        """Drop the rows of edits that are no longer active."""
        rows = active[self.row_edit]  # (b,)
        if bool(rows.all()):
            return
        new_index = torch.cumsum(rows.long(), 0) - 1
        self.reads = self.reads[rows[self.reads[:, 0]]]
        self.reads[:, 0] = new_index[self.reads[:, 0]]
        self.row_edit = self.row_edit[rows]
        self.stack.select(rows.nonzero().flatten())


def group_rows(model, adapter: ArchitectureAdapter, layer: int, per_edit: list[EditRows], pad_id: int,
               blocks: list[torch.nn.Module] | None = None) -> tuple[list[RowGroup], torch.Tensor]:
    """The row groups (lower blocks run once here) and h (n, d), the bare prompts' residual at L;
    the groups run `blocks` above L (default: the model's own; `upper_blocks` makes bf16 copies)."""
    blocks = blocks if blocks is not None else upper_blocks(model, adapter, layer)
    dtype = next(blocks[0].parameters()).dtype if blocks else None
    by_len: dict[int, list[tuple[int, int]]] = {}  # suffix length -> [(edit, row in edit)]
    for i, e in enumerate(per_edit):
        for r, row in enumerate(e.rows):
            by_len.setdefault(len(row.ids) - row.anchor, []).append((i, r))
    groups: list[RowGroup] = []
    bare: dict[int, torch.Tensor] = {}
    for members in by_len.values():
        batch = align([per_edit[i].rows[r] for i, r in members], pad_id)
        hidden = lower_hidden(model, adapter, layer, batch)  # (b, T, d) in the model's dtype
        reads = []
        for g, (i, r) in enumerate(members):
            if r == 0:  # the bare prompt
                bare[i] = hidden[g, batch.anchor].float()
            reads += [(g, int(batch.offsets[g]) + tok - batch.anchor, label, i)
                      for rr, tok, label in per_edit[i].reads if rr == r]
        device = hidden.device
        stack = UpperStack(model, adapter, layer, hidden.to(dtype or hidden.dtype), batch, blocks)
        groups.append(RowGroup(stack,
                               torch.tensor([i for i, _ in members], device=device),
                               torch.tensor(reads, dtype=torch.long, device=device)))
    return groups, torch.stack([bare[i] for i in range(len(per_edit))])


def optimise(model: torch.nn.Module, tokenizer, adapter: ArchitectureAdapter, per_edit: list[EditRows],
             hp: EditHyperParams, blocks: list[torch.nn.Module] | None = None,
             check_stop: Callable[[], None] | None = None, owners: list[int] | None = None) -> Targets:
    """Adam on delta (m, d) for one chunk of edits (module docstring); `blocks` as in `group_rows`.
    `owners[i]`: the delta of edit i (default: its own); edits sharing one are optimised on all their rows
    together (mean of their losses) and stop together, when every one of them is done."""
    layer, n = hp.layers[-1], len(per_edit)
    device = next(model.parameters()).device
    groups, h = group_rows(model, adapter, layer, per_edit, pad_id_of(tokenizer), blocks)
    n_rows = torch.tensor([float(e.n_rewrite) for e in per_edit], device=device)  # (n,)
    tgt_len = torch.tensor([float(e.target_len) for e in per_edit], device=device)  # (n,)
    owner = torch.tensor(owners if owners is not None else range(n), device=device)  # (n,) edit -> delta
    owner = torch.unique(owner, return_inverse=True)[1]  # 0..m-1
    m = int(owner.max()) + 1
    shared = torch.zeros(m, device=device).index_add_(0, owner, torch.ones(n, device=device))  # (m,) edits per delta

    delta = torch.zeros(m, h.shape[1], device=device, requires_grad=True)  # (m, d)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    h_norm = torch.zeros(m, device=device).index_add_(0, owner, h.norm(dim=1)) / shared  # (m,) mean ||h_i||
    active = torch.ones(m, dtype=torch.bool, device=device)
    final = torch.zeros_like(delta)
    last_loss = torch.full((m,), float("nan"), device=device)
    steps = torch.zeros(m, dtype=torch.long, device=device)
    kl_init = torch.zeros(0, device=device)  # (n, V) unedited log-probs after "{subject} is a", read at step 0

    for it in range(hp.v_steps):
        if check_stop is not None:
            check_stop()  # may raise: the optimisation is abandoned, nothing was written
        # 1) the upper blocks of every group, delta added at the anchor column; read the loss positions
        outs, reads = [], []
        for g in groups:
            if len(g.row_edit) == 0:
                continue
            x = g.stack.suffix.float().clone()  # (b, Q, d)
            x[:, 0] = x[:, 0] + delta[owner[g.row_edit]]
            out = g.stack.forward(x.to(g.stack.suffix.dtype))  # (b, Q, d)
            outs.append(out[g.reads[:, 0], g.reads[:, 1]].float())
            reads.append(g.reads)
        read = torch.cat(reads)  # (P, 4): row, column, label, edit
        logp = torch.log_softmax(adapter.logits(model, torch.cat(outs)).float(), dim=-1)  # (P, V)
        label, edit = read[:, 2], read[:, 3]
        is_kl = label < 0
        live = active[owner]  # (n,) edits still optimised
        # 2) loss_s = mean over s's edits i of (nll_i + kl_factor * kl_i) + weight_decay * ||delta_s||^2 / ||h||^2
        tok_lp = logp[~is_kl].gather(1, label[~is_kl, None])[:, 0]  # (P_nll,)
        nll = torch.zeros(n, device=device).index_add_(0, edit[~is_kl], -tok_lp) / (tgt_len * n_rows)  # (n,)
        kl_lp = torch.zeros(n, logp.shape[1], device=device).index_copy(0, edit[is_kl], logp[is_kl])  # (n, V)
        if it == 0:
            kl_init = kl_lp.detach().clone()
        kl = (kl_lp.exp() * (kl_lp - kl_init)).sum(-1) * live  # (n,)
        per_edit_loss = torch.zeros(m, device=device).index_add_(0, owner, nll + hp.kl_factor * kl) / shared
        wd = hp.weight_decay * delta.norm(dim=1) ** 2 / h_norm**2  # (m,)
        loss = per_edit_loss + wd  # (m,) zero-padded for frozen deltas
        last_loss[active] = loss.detach()[active]
        steps[active] = it
        if log.isEnabledFor(logging.DEBUG):
            wrong = torch.zeros(n, device=device).index_add_(
                0, edit[~is_kl], (logp[~is_kl].argmax(-1) != label[~is_kl]).float())
            log.debug("targets step %d: %d active, mean loss %.3f, nll %.3f, greedy-right on every row %.2f",
                      it, int(active.sum()), float(loss.detach()[active].mean()), float(nll.detach()[live].mean()),
                      float((wrong[live] == 0).float().mean()))
        # 3) freeze deltas that are done; their rows leave the groups
        done = active & (loss.detach() < hp.early_stop_loss)
        if hp.early_stop_prob > 0:  # ENCORE's early stop: every target of the delta is likely enough, stop pushing
            least = torch.full((m,), float("inf"), device=device).scatter_reduce(
                0, owner, torch.exp(-nll.detach()), "amin")  # (m,)
            done |= active & (least >= hp.early_stop_prob)
        if it == hp.v_steps - 1:
            done = active.clone()
        final[done] = delta.detach()[done]
        if not (active & ~done).any():
            break
        opt.zero_grad()
        loss[active & ~done].sum().backward()
        opt.step()
        with torch.no_grad():  # undo Adam's momentum on frozen deltas, then clamp to the ball
            delta[~active | done] = final[~active | done]
            scale = (hp.clamp_factor * h_norm / delta.norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
            delta.mul_(scale[:, None])
        if done.any():
            active &= ~done
            for g in groups:
                g.keep(active[owner])
    return Targets(z=h + final[owner], h=h, loss=last_loss[owner].cpu(), steps=steps[owner].cpu())
