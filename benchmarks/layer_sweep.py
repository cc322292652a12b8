"""Measure MEMIT layer windows and lambda on a model (default the bundled SmolLM2-135M; docs/layer-choice.md,
docs/models.md for Gemma 3 270M).

    .venv/bin/python benchmarks/layer_sweep.py --n-edits 50 --windows 2-6 4-8 --lambdas 15000
    .venv/bin/python benchmarks/layer_sweep.py --n-edits 100 --windows 3-7 --lambdas 15000 --timing

For each (window, lambda): one batch of the first N CounterFact edits, then efficacy
(P(new) > P(old) on the prompt), paraphrase (rephrase_prompt) and neighbourhood
(P(true) > P(new) on locality_prompt), with kbsync.model.scoring.target_logprobs.
C comes from text the model samples itself (the offline default corpus), cached on disk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kbsync.editing.configured import corpus_for
from kbsync.editing.covariance import ModelSampleCorpus, second_moments
from kbsync.editing.hparams import defaults_for
from kbsync.editing.memit import compute_delta
from kbsync.editing.request import EditRequest
from kbsync.editing.targets import compute_targets, context_templates
from kbsync.model.loading import load_model
from kbsync.model.scoring import target_logprobs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "counterfact-train.json"


def load_edits(n: int, data: Path = DATA) -> list[dict]:
    recs = json.loads(data.read_text())
    return [r for r in recs if r["subject"] in r["prompt"]][:n]


def metrics(model, tok, recs) -> dict[str, float]:
    def wins(prompts, a, b):
        return (target_logprobs(model, tok, prompts, a) > target_logprobs(model, tok, prompts, b)).float().mean()
    new = [r["target_new"] for r in recs]
    return {
        "ES": float(wins([r["prompt"] for r in recs], new, [r["ground_truth"] for r in recs])),
        "PS": float(wins([r["rephrase_prompt"] for r in recs], new, [r["ground_truth"] for r in recs])),
        "NS": float(wins([r["locality_prompt"] for r in recs], [r["locality_ground_truth"] for r in recs], new)),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-edits", type=int, default=50)
    ap.add_argument("--windows", nargs="+", default=["3-7"])
    ap.add_argument("--lambdas", nargs="+", type=float, default=[15000.0])
    ap.add_argument("--cov-samples", type=int, default=500)
    ap.add_argument("--state-dir", type=Path, default=Path("/tmp/kbsync-state"))
    ap.add_argument("--timing", action="store_true", help="also time batched vs one-at-a-time targets")
    ap.add_argument("--model", default="builtin:smollm2-135m", help="model spec (a .gguf path works)")
    ap.add_argument("--data", type=Path, default=DATA, help="CounterFact (EasyEdit reduced schema)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sample-batch", type=int, default=32, help="texts sampled per batch for C")
    ap.add_argument("--corpus", default="model-samples",
                    help="[editing] corpus for C: model-samples (sampled now), builtin:gemma3-samples, a .txt file")
    args = ap.parse_args()

    lm = load_model(args.model, state_dir=args.state_dir, device=args.device)
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    recs = load_edits(args.n_edits, args.data)
    reqs = [EditRequest(r["prompt"], r["subject"], r["target_new"], r["ground_truth"], i) for i, r in enumerate(recs)]
    windows = [tuple(range(int(w.split("-")[0]), int(w.split("-")[1]) + 1)) for w in args.windows]
    all_layers = sorted({layer for w in windows for layer in w})
    t0 = time.perf_counter()
    corpus = (ModelSampleCorpus(model, tok, seed=0, n_tokens=64, batch_size=args.sample_batch)
              if args.corpus == "model-samples" else corpus_for(args.corpus, lm))
    cov = second_moments(lm, tok, adapter, all_layers, corpus, args.cov_samples, args.state_dir / "cov")
    print(f"# C for layers {all_layers}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    base = metrics(model, tok, recs)
    print(f"| unedited | - | {base['ES']:.2f} | {base['PS']:.2f} | {base['NS']:.2f} | - |")
    hp0 = defaults_for(adapter.family, adapter.n_layers)
    for w in windows:
        for lam in args.lambdas:
            hp = hp0.replace(layers=w, cov_lambda=lam)
            timings: dict = {}
            delta = compute_delta(lm, tok, adapter, reqs, hp, cov, timings=timings)
            applied = delta.apply(model, adapter)
            m = metrics(model, tok, recs)
            applied.revert()
            t = " ".join(f"{k}={v:.1f}" for k, v in timings.items()) + f" z_err={delta.meta['z_rel_error_mean']}"
            print(f"| {w[0]}-{w[-1]} | {lam:g} | {m['ES']:.2f} | {m['PS']:.2f} | {m['NS']:.2f} | {t} |", flush=True)
    if args.timing:
        hp = hp0.replace(layers=windows[0], early_stop_loss=0.0, v_steps=10)  # fixed work, comparable
        tpl = context_templates(model, tok, hp)
        k = min(5, len(reqs))
        t0 = time.perf_counter()
        compute_targets(model, tok, adapter, reqs, hp, tpl)
        batched = (time.perf_counter() - t0) / len(reqs)
        t0 = time.perf_counter()
        for r in reqs[:k]:
            compute_targets(model, tok, adapter, [r], hp, tpl)
        single = (time.perf_counter() - t0) / k
        print(f"# targets per edit (10 steps, no early stop): batched {batched:.3f}s, one at a time "
              f"{single:.3f}s, speed-up {single / batched:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
