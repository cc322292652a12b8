"""The evaluation driver: metrics before, edit (one batch or consecutive batches), metrics after,
costs, and the model's edited weights restored bit for bit at the end.

    1) pre  = measure(unedited model)
    2) C_l  = second_moments(...)                 covariance_s (cached under the state dir)
    3) for each batch: delta = compute_delta(model edited so far); apply it
                       (editing/sequence.py: AlphaEdit and MEMIT's edit_memory keep earlier batches' keys)
    4) post = measure(edited model); retention = share of earlier batches' edits still winning
    5) restore the original weights

Timings: targets_s, keys_s, solve_s summed over batches (compute_delta fills them); edit_s is
the wall time of computing and applying every batch, total_s = covariance_s + edit_s, and
edits_per_s = n_edits / edit_s (covariance is a one-off per model and corpus, cached).
Peak memory per phase: covariance_peak_rss_mb, targets_peak_rss_mb, keys_peak_rss_mb,
solve_peak_rss_mb (and *_peak_cuda_mb on CUDA; kbsync.phases), beside the process's peak_rss_mb.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kbsync.errors import ConfigError
from kbsync.phases import phase, process_peak_rss_mb
from kbsync.sources.catalogue import load_catalogue

from .datasets import EvalCase, load_cases, select
from .metrics import Metrics, ge_prompts, measure

log = logging.getLogger(__name__)


def evaluate_file(settings, state_dir: Path, dataset: str | Path, *, limit: int | None = None, offset: int = 0,
                  batch_size: int | None = None, algorithm: str | None = None, sequential: bool = False,
                  device: str | None = None, cov_samples: int | None = None, corpus: str | None = None,
                  gen_tokens: int = 100, gen_prompts: int = 10, norm_anchor: bool | None = None,
                  early_stop_prob: float | None = None, norm_constraint: float | None = None) -> dict[str, Any]:
    """``kbsync eval``: the configured model and hyper-parameters on a benchmark file (the
    keyword overrides, where given, replace the configured value)."""
    from kbsync.editing.configured import corpus_for, hyper_parameters, load_configured_model

    schema, all_cases = load_cases(dataset)
    cases, skipped = select(all_cases, offset, limit)
    if not cases:
        raise ConfigError(f"dataset {dataset} has no editable case from offset {offset} "
                          f"({len(all_cases)} records, {skipped} without their subject in the prompt); lower --offset")
    if batch_size and not sequential and batch_size < len(cases):
        raise ConfigError(f"--batch-size {batch_size} splits {len(cases)} edits only with --sequential; "
                          "add --sequential, or drop --batch-size to edit all in one batch")
    if device:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"device": device})})
    loaded = load_configured_model(settings, state_dir)
    hp = hyper_parameters(settings, loaded)
    if algorithm:
        hp = hp.replace(algorithm=algorithm)
    if cov_samples:
        hp = hp.replace(cov_samples=cov_samples)
    lasting = {"norm_anchor": norm_anchor, "early_stop_prob": early_stop_prob, "norm_constraint": norm_constraint}
    hp = hp.replace(**{k: v for k, v in lasting.items() if v is not None})
    size = (batch_size or settings.editing.batch_size) if sequential else len(cases)
    source = corpus_for(corpus or settings.editing.corpus, loaded)
    result = evaluate(loaded, hp, source, cases, Path(state_dir) / "cache" / "stats", batch_size=size,
                      sequential=sequential, gen_tokens=gen_tokens, gen_prompts=gen_prompts, dataset=Path(dataset))
    result["config"].update(dataset=str(dataset), schema=schema, offset=offset, limit=limit,
                            n_skipped=skipped)
    return result


def evaluate(loaded, hp, corpus, cases: list[EvalCase], stats_dir: Path, *, batch_size: int,
             sequential: bool = False, gen_tokens: int = 100, gen_prompts: int = 10,
             answer_tokens: int = 8, dataset: Path | None = None) -> dict[str, Any]:
    """Edit ``cases`` into ``loaded.model`` in batches of ``batch_size`` and measure; the model
    is restored afterwards. Returns the JSON-ready report (see the module docstring)."""
    import torch

    from kbsync.editing.covariance import cache_path, samples_for, second_moments
    from kbsync.editing.sequence import EditSequence

    model, tok, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(loaded.device)
    prompts = ge_prompts(cases, gen_prompts)

    def metrics() -> tuple[Metrics, float]:
        t0 = time.perf_counter()
        m = measure(model, tok, cases, gen_prompts=prompts, gen_tokens=gen_tokens, answer_tokens=answer_tokens)
        return m, time.perf_counter() - t0

    log.info("eval: measuring the unedited model on %d cases", len(cases))
    pre, pre_s = metrics()

    timings: dict[str, Any] = {"targets_s": 0.0, "keys_s": 0.0, "solve_s": 0.0}
    n_samples = samples_for(corpus, hp.cov_samples)
    cached = all(cache_path(stats_dir, loaded.identity, layer, corpus.identity, n_samples).is_file()
                 for layer in hp.layers)
    with phase("covariance", timings, loaded.device):
        moments = second_moments(loaded, tok, adapter, hp.layers, corpus, hp.cov_samples, stats_dir,
                                 model_identity=loaded.identity)
    covariance_s = timings.pop("covariance_s")

    params = dict(model.named_parameters(remove_duplicate=False))
    names = sorted({adapter.weight_name(layer) for layer in hp.layers})
    original = {n: params[n].detach().to("cpu", copy=True) for n in names}  # restored in 5)
    batches = [cases[i:i + batch_size] for i in range(0, len(cases), batch_size)]
    sequence = EditSequence(loaded, hp, moments)
    batch_s: list[float] = []
    phrasings = relation_phrasings(dataset)
    try:
        first_id = 0
        for b, batch in enumerate(batches):
            log.info("eval: batch %d/%d (%d edits)", b + 1, len(batches), len(batch))
            t0 = time.perf_counter()
            requests = [c.request(first_id + i, phrasings(c)) for i, c in enumerate(batch)]
            first_id += len(batch)
            sequence.edit(requests, timings=timings)  # kept; `original` undoes every batch at once
            if cuda:
                torch.cuda.synchronize(loaded.device)
            batch_s.append(time.perf_counter() - t0)
        log.info("eval: measuring the edited model")
        post, post_s = metrics()
    finally:
        with torch.no_grad():
            for n, t in original.items():
                params[n].copy_(t)
    timings.pop("total_s", None)  # compute_delta's own total, of the last batch only

    edit_s = sum(batch_s)
    n = len(cases)
    earlier = post.wins[: n - len(batches[-1])]  # edits of every batch but the last
    report: dict[str, Any] = {
        "n_edits": n,
        "pre": _clean(pre.as_dict()),
        "post": _clean(post.as_dict()),
        "timings": {
            "covariance_s": round(covariance_s, 3),
            "covariance_cached": cached,
            **{k: round(v, 3) for k, v in timings.items()},
            "targets_per_edit_s": round(timings["targets_s"] / n, 4),
            "target_steps_per_edit": round(timings.pop("target_steps", 0) / n, 2),
            "edit_s": round(edit_s, 3),
            "total_s": round(covariance_s + edit_s, 3),
            "edits_per_s": round(n / edit_s, 3) if edit_s > 0 else None,
            "batch_s": [round(s, 3) for s in batch_s],
            "pre_eval_s": round(pre_s, 3),
            "post_eval_s": round(post_s, 3),
            "peak_rss_mb": round(process_peak_rss_mb(), 1),
            "peak_cuda_mb": round(torch.cuda.max_memory_allocated(loaded.device) / 2**20, 1) if cuda else None,
        },
        "config": {
            "algorithm": hp.algorithm,
            "layers": list(hp.layers),
            "lambda": hp.cov_lambda,
            "batch_size": batch_size,
            "n_batches": len(batches),
            "sequential": sequential,
            "v_steps": hp.v_steps,
            "v_lr": hp.v_lr,
            "n_prefixes": hp.n_prefixes,
            "paraphrase_templates": hp.paraphrase_templates,
            "merge_same_subject": hp.merge_same_subject,
            "target_dtype": hp.target_dtype,
            "norm_anchor": hp.norm_anchor,
            "early_stop_prob": hp.early_stop_prob,
            "norm_constraint": hp.norm_constraint,
            "edit_memory": hp.edit_memory,
            "cov_samples": hp.cov_samples,
            "corpus": corpus.identity,
            "model": loaded.spec,
            "device": str(loaded.device),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "gen_tokens": gen_tokens,
            "gen_prompts": len(prompts),
        },
    }
    if sequential:
        report["retention"] = sum(earlier) / len(earlier) if earlier else None
    return report


def relation_phrasings(dataset: Path | None) -> Callable[[EvalCase], tuple[str, ...]]:
    """case -> the shipped catalogue's paraphrases of its relation (what apply optimises on, too).
    A case without a relation id (EasyEdit's reduced CounterFact) is matched by its prompt template
    against the catalogue's prompts and, where it lies beside the dataset, ROME's known_1000.json."""
    catalogue = load_catalogue()
    by_template = {t: r.id for r in catalogue for t in (r.prompt, *r.paraphrases)}
    known = dataset.parent / "known_1000.json" if dataset else None
    if known is not None and known.is_file():
        for rec in json.loads(known.read_text(encoding="utf-8")):
            by_template.setdefault(str(rec.get("template", "")), str(rec.get("relation_id", "")))
    paraphrases = {r.id: tuple(r.paraphrases) for r in catalogue}

    def of(case: EvalCase) -> tuple[str, ...]:
        relation = case.relation or by_template.get(case.prompt.replace(case.subject, "{}", 1), "")
        return paraphrases.get(relation, ())

    return of


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """NaN (a metric with nothing to average, e.g. no paraphrases) as null: JSON has no NaN."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}
