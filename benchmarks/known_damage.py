"""Where sequential edits hurt the facts a model knows: the directions of ΔW, or its size?

    .venv/bin/python benchmarks/known_damage.py --batches 4 --threads 1 --out /tmp/known_damage.json

Edits the first N*k CounterFact cases in N sequential batches of k (one lifelong configuration,
benchmarks/lifelong.py CONFIGS; default the daemon's), then answers the known_1000 facts the base
model answered right (greedy, 8 tokens) and held-out perplexity on four models:

    edited       W0 + ΔW                         what the edits did
    rotated      W0 + ΔW Q, Q random orthogonal  same singular values, input directions at random
    scaled       W0 + s ΔW                       the same directions, a fraction of the size

If `rotated` hurts as much as `edited`, the known facts are not lost because ΔW points at their
keys but because of how large it is; `scaled` shows how the loss grows with that size. Each lost
fact is listed with its answers and the edit targets its new answer names (bleed from an edit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lifelong import BENCH_KEYS, CONFIGS, DATA, ROOT, heldout_texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-name", default="memit+memory", choices=list(CONFIGS),
                        help="lifelong configuration (default: the daemon's, MEMIT with edit memory)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--known", type=int, default=300, help="known_1000 facts probed")
    parser.add_argument("--rotations", type=int, default=2, help="random rotations of ΔW's input side")
    parser.add_argument("--scales", type=float, nargs="*", default=[0.5], help="fractions of ΔW")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".kbsync")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures and the lost facts")
    args = parser.parse_args(argv)

    import torch

    from kbsync.config import load_settings
    from kbsync.editing.configured import corpus_for, hyper_parameters, load_configured_model
    from kbsync.editing.covariance import second_moments
    from kbsync.editing.sequence import EditSequence
    from kbsync.evaluation.datasets import load_cases, select
    from kbsync.evaluation.run import relation_phrasings
    from kbsync.model.scoring import perplexity
    from kbsync.research.lifelong import answered_right, greedy_known, load_known_facts

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    settings = load_settings(None)
    loaded = load_configured_model(settings, args.state_dir)
    model, tok, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    overrides = {k: v for k, v in CONFIGS[args.config_name].items() if k not in BENCH_KEYS}
    hp = hyper_parameters(settings, loaded).replace(**overrides)  # type: ignore[arg-type]
    moments = second_moments(loaded, tok, adapter, hp.layers, corpus_for(settings.editing.corpus, loaded),
                             hp.cov_samples, args.state_dir / "cache" / "stats", model_identity=loaded.identity)
    heldout = heldout_texts(loaded, 16)
    _, all_cases = load_cases(DATA / "counterfact-train.json")
    cases, _ = select(all_cases, 0, args.batches * args.batch_size)
    edited_subjects = {c.subject for c in cases}
    pool = [f for f in load_known_facts(DATA / "known_1000.json")[:args.known] if f.subject not in edited_subjects]
    facts = [f for f, ok in zip(pool, answered_right(model, tok, pool), strict=True) if ok]
    last: dict[str, list] = {}  # the latest probe's greedy answers and which of them are right

    def probe(label: str) -> dict:
        last["answers"], last["right"] = greedy_known(model, tok, facts)
        n_right = sum(last["right"])
        row = {"model": label, "known_right": n_right, "known_acc": round(n_right / len(facts), 4),
               "perplexity": round(perplexity(model, tok, heldout), 3)}
        print(f"{label:<40} known {n_right}/{len(facts)} ({row['known_acc']:.3f})  "
              f"perplexity {row['perplexity']:.2f}", flush=True)
        return row

    rows = [probe("base")]
    base_answers = last["answers"]
    params = dict(model.named_parameters(remove_duplicate=False))
    names = [adapter.weight_name(layer) for layer in hp.layers]
    w0 = {n: params[n].detach().clone() for n in names}
    paraphrases = relation_phrasings(DATA / "counterfact-train.json")
    sequence = EditSequence(loaded, hp, moments)
    for b in range(args.batches):
        batch = cases[b * args.batch_size:(b + 1) * args.batch_size]
        sequence.edit([c.request(b * args.batch_size + i, paraphrases(c)) for i, c in enumerate(batch)])
    rows.append(probe(f"edited ({len(cases)} edits)"))
    targets = sorted({c.target_new for c in cases})
    answers, right = last["answers"], last["right"]
    lost = [{"prompt": f.prompt, "answer": f.answer, "base": a0, "edited": a,
             "names_edit_target": [t for t in targets if t.lower() in a.lower()]}
            for f, a0, a, ok in zip(facts, base_answers, answers, right, strict=True) if not ok]
    dw = {n: (params[n].detach() - w0[n]).double() for n in names}
    rel = {n: round(float(dw[n].norm() / w0[n].double().norm()), 4) for n in names}
    gen = torch.Generator().manual_seed(0)
    try:
        for trial in range(args.rotations):
            with torch.no_grad():
                for n in names:
                    q, _ = torch.linalg.qr(torch.randn(dw[n].shape[1], dw[n].shape[1], generator=gen, dtype=torch.float64))
                    params[n].copy_(w0[n] + (dw[n] @ q).to(w0[n].dtype))
            rows.append(probe(f"rotated ΔW (trial {trial + 1})"))
        for s in args.scales:
            with torch.no_grad():
                for n in names:
                    params[n].copy_(w0[n] + (s * dw[n]).to(w0[n].dtype))
            rows.append(probe(f"{s:g} × ΔW"))
    finally:
        with torch.no_grad():
            for n in names:
                params[n].copy_(w0[n])
    bleed = sum(1 for x in lost if x["names_edit_target"])
    print(f"{len(lost)} known facts lost, {bleed} of them now name an edit's new value; ‖ΔW‖/‖W0‖ {rel}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "config": args.config_name,
                                        "layers": list(hp.layers), "edits": len(cases), "known_facts": len(facts),
                                        "rows": rows, "delta_rel_norm": rel, "lost": lost,
                                        "seconds": round(time.perf_counter() - t_start, 1)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
