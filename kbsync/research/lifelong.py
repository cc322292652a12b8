"""Lifelong editing: N sequential batches of k edits, and what they do to the model over time.

    0) base = measure(unedited model): perplexity of the held-out texts, known facts (those the
       base model answers right are kept: base accuracy 1.0 by construction), weight norms
    for b in 1..N:
        1) delta_b = compute_delta(model edited by batches < b); apply it     (seconds per batch)
           AlphaEdit (and MEMIT's edit_memory): the keys of every earlier batch are preserved
           protect: the keys of other facts the base model knows, read on the model as it is,
           are preserved too, weighted by protect_weight (disjoint from the known facts measured)
        2) every `every` batches (and after the last) a checkpoint:
           ES / PS / NS / efficacy_acc / paraphrase_acc of batch b        (metrics.measure)
           retention      share of all earlier batches' edits with P(new) > P(old) on their prompt
           edit_acc       share of every edit so far whose greedy answer names its target
           perplexity     of the held-out texts                           (metrics.perplexity)
           known_acc      share of the known facts still answered right (greedy)
           weight_norm    ||W_l||_F / ||W0_l||_F and ||W_l - W0_l||_F / ||W0_l||_F per edited layer
    3) with compact=True, after the last batch: every edit re-solved from the base weights in
       chunks of compact_chunk (0: batch_size), merged into one delta (what `kbsync compact` does),
       and the share of all edits winning on their prompt compared with the sequential log's
       ("compaction"). With chunks of batch_size and edit memory the re-solve repeats the
       sequential chain step for step (the same targets on the same models): the same weights.
    the model's edited weights are restored bit for bit at the end. A run that was stopped goes on
    from its last checkpoint (`snapshots`, `resume`: lifelong_snapshot.py).

`benchmarks/lifelong.py` runs this for several configurations and plots the curves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbsync.errors import ConfigError
from kbsync.evaluation.datasets import EvalCase
from kbsync.evaluation.metrics import measure
from kbsync.model.scoring import perplexity
from kbsync.research.lifelong_snapshot import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownFact:
    prompt: str
    subject: str
    answer: str


def load_known_facts(path: str | Path, limit: int | None = None) -> list[KnownFact]:
    """ROME's known_1000.json: {prompt, subject, attribute} records (the first `limit`)."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read known facts from {path} ({exc}); give ROME's known_1000.json") from exc
    facts = [KnownFact(str(r["prompt"]), str(r["subject"]), str(r["attribute"]))
             for r in records if isinstance(r, dict) and r.get("prompt") and r.get("attribute")]
    if not facts:
        raise ConfigError(f"{path} holds no {{prompt, subject, attribute}} records; give ROME's known_1000.json")
    return facts[:limit]


def answered_right(model, tokenizer, facts: Sequence[KnownFact], answer_tokens: int = 8) -> list[bool]:
    return greedy_known(model, tokenizer, facts, answer_tokens)[1]


def greedy_known(model, tokenizer, facts: Sequence[KnownFact],
                 answer_tokens: int = 8) -> tuple[list[str], list[bool]]:
    """Each fact's greedy answer and whether it names the fact's answer: the regression gate's
    own judgement of a known fact (`verification.known`), so both measure the same thing."""
    from kbsync.verification import known

    asked = [known.KnownFact(f.subject, "", f.prompt, (f.answer,)) for f in facts]
    return known.greedy_known(model, tokenizer, asked, answer_tokens)


def edit_wins(model, tokenizer, cases: Sequence[EvalCase]) -> list[bool]:
    """Per case: P(new | prompt) > P(old | prompt) (teacher-forced, the ES criterion)."""
    from kbsync.model.scoring import target_logprobs

    if not cases:
        return []
    prompts = [c.prompt for c in cases for _ in (0, 1)]
    targets = [t for c in cases for t in (c.target_new, c.target_true)]
    s = target_logprobs(model, tokenizer, prompts, targets).tolist()
    return [a > b for a, b in zip(s[0::2], s[1::2], strict=True)]


def edit_hits(model, tokenizer, cases: Sequence[EvalCase], answer_tokens: int = 8) -> list[bool]:
    """Per case: the greedy answer to its prompt names target_new."""
    return answered_right(model, tokenizer, [KnownFact(c.prompt, c.subject, c.target_new) for c in cases],
                          answer_tokens)


def weight_norms(params: dict, base: dict) -> dict[str, dict[str, float]]:
    """{weight name: {"norm": ||W||/||W0||, "delta": ||W - W0||/||W0||}} (Frobenius)."""
    out = {}
    for name, w0 in base.items():
        w = params[name].detach().to(w0.device, w0.dtype)
        n0 = float(w0.norm())
        out[name] = {"norm": round(float(w.norm()) / n0, 6), "delta": round(float((w - w0).norm()) / n0, 6)}
    return out


def _share(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def protected_keys(loaded, facts: Sequence[KnownFact], layers: Sequence[int], weight: float):
    """weight * K K^T of the facts' subject keys (bare prompt) at each layer, on the model as it is."""
    from kbsync.editing.keys import compute_keys
    from kbsync.editing.nullspace import PreservedKeys
    from kbsync.editing.request import EditRequest

    requests = [EditRequest(f.prompt, f.subject, f.answer) for f in facts]
    keys, _ = compute_keys(loaded.model, loaded.tokenizer, loaded.adapter, requests, ["{}"], list(layers), layers[-1])
    out = PreservedKeys()
    for layer, k in keys.items():
        out.add(layer, k, weight)
    return out


def run_lifelong(loaded, hp, moments: dict, cases: Sequence[EvalCase], *, batch_size: int, n_batches: int,
                 every: int = 1, known: Sequence[KnownFact] = (), heldout: Sequence[str] = (),
                 protect: Sequence[KnownFact] = (), protect_weight: float = 0.0,
                 paraphrases: Callable[[EvalCase], tuple[str, ...]] | None = None,
                 on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 on_base: Callable[[dict[str, Any]], None] | None = None,
                 compact: bool = False, compact_chunk: int = 0, snapshots: Path | None = None,
                 resume: bool = False) -> dict[str, Any]:
    """Edit `n_batches` batches of `cases` one after another into `loaded.model`, measuring (see the
    module docstring); the model is restored afterwards. `moments` are the C_l of hp.layers.
    `snapshots`: a folder where every checkpoint leaves the run's state (lifelong_snapshot.py);
    with `resume`, the run goes on from the one there (earlier rows are passed to on_checkpoint again)."""
    import torch

    from kbsync.editing.sequence import EditSequence

    if every < 1 or batch_size < 1 or n_batches < 1:
        raise ConfigError("batch size, number of batches and checkpoint interval must all be at least 1")
    if len(cases) < batch_size * n_batches:
        raise ConfigError(f"{n_batches} batches of {batch_size} need {n_batches * batch_size} cases, "
                          f"the dataset has {len(cases)}; lower --batches or --batch-size")
    model, tok, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    params = dict(model.named_parameters(remove_duplicate=False))
    names = sorted({adapter.weight_name(layer) for layer in hp.layers})
    base = {n: params[n].detach().to("cpu", copy=True) for n in names}  # restored at the end
    edited_subjects = {c.subject for c in cases[:batch_size * n_batches]}
    pool = [f for f in known if f.subject not in edited_subjects]  # an edited subject's facts may move
    t0 = time.perf_counter()
    right = answered_right(model, tok, pool)
    facts = [f for f, ok in zip(pool, right, strict=True) if ok]  # what the base model knows
    measured = {f.subject for f in known}  # a protected key must not be a measured fact's subject
    guard = [f for f in protect if f.subject not in edited_subjects and f.subject not in measured]
    guard = [f for f, ok in zip(guard, answered_right(model, tok, guard), strict=True) if ok] if protect_weight else []
    base_row = {"batch": 0, "n_edits": 0, "perplexity": round(perplexity(model, tok, heldout), 4) if heldout else None,
                "known_acc": 1.0 if facts else None, "known_facts": len(facts), "known_pool": len(pool),
                "protected_facts": len(guard),
                "weights": weight_norms(params, base), "measure_s": round(time.perf_counter() - t0, 3)}
    if on_base is not None:
        on_base(base_row)
    checkpoints: list[dict[str, Any]] = []
    sequence = EditSequence(loaded, hp, moments)
    batch_s: list[float] = []
    cpu_s: list[float] = []  # CPU seconds of this process (all threads): comparable across machine loads
    run = {"model": loaded.identity, "hparams": hp.to_dict(), "batch_size": batch_size, "n_batches": n_batches,
           "every": every, "protect_weight": protect_weight, "cases": [c.case_id for c in cases[:batch_size * n_batches]],
           "known": [f.prompt for f in facts], "protected": [f.prompt for f in guard],
           "heldout": hashlib.sha256("\x00".join(heldout).encode()).hexdigest()}
    start = 0
    snapshot = Snapshot.load(snapshots, run) if snapshots is not None and resume else None
    if snapshot is not None:
        start, checkpoints, batch_s, cpu_s = snapshot.batch, snapshot.checkpoints, snapshot.batch_s, snapshot.cpu_s
        with torch.no_grad():
            for n, w in snapshot.weights.items():
                params[n].copy_(w)
        sequence.preserved = snapshot.preserved
        log.info("lifelong: going on after batch %d/%d from %s", start, n_batches, snapshots)
        for row in checkpoints:
            if on_checkpoint is not None:
                on_checkpoint(row)
    done: list[EvalCase] = list(cases[:start * batch_size])
    compaction: dict[str, Any] | None = None
    try:
        for b in range(start, n_batches):
            batch = list(cases[b * batch_size:(b + 1) * batch_size])
            requests = [c.request(len(done) + i, paraphrases(c) if paraphrases else ()) for i, c in enumerate(batch)]
            t0, c0 = time.perf_counter(), time.process_time()
            extra = protected_keys(loaded, guard, hp.layers, protect_weight) if guard else None
            delta = sequence.edit(requests, also_keep=extra)
            batch_s.append(time.perf_counter() - t0)
            cpu_s.append(time.process_time() - c0)
            earlier, done = list(done), done + batch
            log.info("lifelong: batch %d/%d in %.1fs", b + 1, n_batches, batch_s[-1])
            if (b + 1) % every and b + 1 != n_batches:
                continue
            t0 = time.perf_counter()
            m = measure(model, tok, batch, gen_tokens=0)
            row = {"batch": b + 1, "n_edits": len(done), "es": m.es, "ps": m.ps, "ns": m.ns,
                   "efficacy_acc": m.efficacy_acc, "paraphrase_acc": m.paraphrase_acc,
                   "retention": _share(edit_wins(model, tok, earlier)),
                   "edit_acc": _share(edit_hits(model, tok, done)),
                   "perplexity": round(perplexity(model, tok, heldout), 4) if heldout else None,
                   "known_acc": _share(answered_right(model, tok, facts)),
                   "weights": weight_norms(params, base),
                   "z_norm_ratio": float(delta.meta.get("z_norm_ratio_mean", "nan")),
                   "target_steps": float(delta.meta.get("target_steps_mean", "nan")),
                   "seconds_per_batch": round(sum(batch_s[-every:]) / len(batch_s[-every:]), 3),
                   "cpu_s_per_batch": round(sum(cpu_s[-every:]) / len(cpu_s[-every:]), 3),
                   "measure_s": round(time.perf_counter() - t0, 3)}
            checkpoints.append(row)
            if snapshots is not None:
                Snapshot(b + 1, checkpoints, batch_s, cpu_s, {n: params[n] for n in base},
                         sequence.preserved).save(snapshots, run)
            if on_checkpoint is not None:
                on_checkpoint(row)
        if compact:
            sequential = edit_wins(model, tok, done)
            compaction = _compact(loaded, hp, moments, done, base, compact_chunk or batch_size, paraphrases)
            compaction["chunk"] = compact_chunk or batch_size
            compaction["retention_sequential"] = _share(sequential)
            # the headroom a compaction wins back: the same figures as the last checkpoint's, compacted
            compaction["perplexity_compacted"] = round(perplexity(model, tok, heldout), 4) if heldout else None
            compaction["known_acc_compacted"] = _share(answered_right(model, tok, facts))
    finally:
        with torch.no_grad():
            for n, t in base.items():
                params[n].copy_(t)
    return {"base": base_row, "checkpoints": checkpoints, "compaction": compaction, "resumed_after": start,
            "batch_s": [round(s, 3) for s in batch_s], "cpu_s": [round(s, 3) for s in cpu_s],
            "config": {"algorithm": hp.algorithm, "layers": list(hp.layers), "lambda": hp.cov_lambda,
                       "norm_anchor": hp.norm_anchor, "early_stop_prob": hp.early_stop_prob,
                       "norm_constraint": hp.norm_constraint, "edit_memory": hp.edit_memory,
                       "protect_weight": protect_weight, "batch_size": batch_size, "n_batches": n_batches,
                       "every": every, "v_steps": hp.v_steps, "cov_samples": hp.cov_samples,
                       "heldout_texts": len(heldout), "device": str(loaded.device)}}


def _compact(loaded, hp, moments: dict, cases: Sequence[EvalCase], base: dict, chunk: int,
             paraphrases: Callable[[EvalCase], tuple[str, ...]] | None) -> dict[str, Any]:
    """Every case re-solved from the base weights (chunks chained), merged into one delta and applied
    to the base: the share of cases winning on their prompt, and the cost (sync/compact.py's re-solve)."""
    import torch

    from kbsync.editing.delta import Delta
    from kbsync.editing.sequence import EditSequence

    model, tok, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    params = dict(model.named_parameters(remove_duplicate=False))
    t0 = time.perf_counter()
    with torch.no_grad():
        for n, t in base.items():
            params[n].copy_(t)
    sequence = EditSequence(loaded, hp, moments)
    chunks: list[Delta] = []
    for i in range(0, len(cases), chunk):
        requests = [c.request(i + j, paraphrases(c) if paraphrases else ()) for j, c in enumerate(cases[i:i + chunk])]
        chunks.append(sequence.edit(requests))
    with torch.no_grad():
        for n, t in base.items():
            params[n].copy_(t)
    Delta.merged(chunks).apply(model, adapter)  # base + the one merged delta, as a compacted version loads
    seconds = time.perf_counter() - t0
    return {"retention_compacted": _share(edit_wins(model, tok, cases)),
            "edit_acc_compacted": _share(edit_hits(model, tok, cases)),
            "weights": weight_norms(params, base), "seconds": round(seconds, 3)}
