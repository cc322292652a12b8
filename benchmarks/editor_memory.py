"""Peak memory and seconds per phase of one MEMIT batch, by batch size, on the bundled model.

    .venv/bin/python benchmarks/editor_memory.py --n 100,1000 --v-steps 2

Each N runs compute_delta once, in a process of its own (so its peak RSS is its own), on the
first N editable cases of ../shared/data/counterfact-train.json, with the configured
hyper-parameters (the bundled model's defaults, [editing] from --config). No quality metrics:
`kbsync eval` and benchmarks/eval_counterfact.py measure those. Memory does not depend on the
number of Adam steps (each step frees the last one's graph), so --v-steps 2 measures the peak of
a large batch in minutes; the seconds are then those of two steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "counterfact-train.json"
PHASES = ("covariance", "targets", "keys", "solve")


def one(args: argparse.Namespace) -> dict:
    """The child: one batch of args.n edits; its report as a dict."""
    from kbsync.config import load_settings
    from kbsync.editing.configured import corpus_for, hyper_parameters, load_configured_model
    from kbsync.editing.covariance import second_moments
    from kbsync.editing.memit import compute_delta
    from kbsync.evaluation.datasets import load_cases, select
    from kbsync.evaluation.run import relation_phrasings
    from kbsync.phases import phase, process_peak_rss_mb

    settings = load_settings(str(args.config) if args.config else None)
    loaded = load_configured_model(settings, settings.state.dir)
    hp = hyper_parameters(settings, loaded)
    if args.v_steps:
        hp = hp.replace(v_steps=args.v_steps)
    if args.max_batch_tokens:
        hp = hp.replace(max_batch_tokens=args.max_batch_tokens)
    cases, _ = select(load_cases(args.data)[1], 0, args.n)
    phrasings = relation_phrasings(args.data)
    requests = [c.request(i, phrasings(c)) for i, c in enumerate(cases)]
    timings: dict = {}
    with phase("covariance", timings, loaded.device):
        moments = second_moments(loaded, loaded.tokenizer, loaded.adapter, hp.layers,
                                 corpus_for(settings.editing.corpus, loaded), hp.cov_samples,
                                 Path(settings.state.dir) / "cache" / "stats", model_identity=loaded.identity)
    t0 = time.perf_counter()
    compute_delta(loaded, loaded.tokenizer, loaded.adapter, requests, hp, moments, timings=timings)
    return {"n": len(requests), "v_steps": hp.v_steps, "max_batch_tokens": hp.max_batch_tokens,
            "edit_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(process_peak_rss_mb(), 1),
            **{k: round(v, 1) if isinstance(v, float) else v for k, v in timings.items() if k != "total_s"}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="100,1000", help="batch sizes, comma-separated")
    ap.add_argument("--v-steps", type=int, default=0, help="Adam steps (0: the configured default)")
    ap.add_argument("--max-batch-tokens", type=int, default=0, help="chunk budget (0: the configured default)")
    ap.add_argument("--config", type=Path, default=None, help="kbsync config (default: the bundled model)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.n = int(args.n)
        print(json.dumps(one(args)))
        return 0
    cols = ("n", "v_steps", "max_batch_tokens", "target_chunks", "edit_s", "targets_s", "keys_s", "solve_s",
            "targets_peak_rss_mb", "keys_peak_rss_mb", "solve_peak_rss_mb", "peak_rss_mb")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for n in (int(x) for x in args.n.split(",")):
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--v-steps", str(args.v_steps),
               "--max-batch-tokens", str(args.max_batch_tokens), "--data", str(args.data)]
        if args.config:
            cmd += ["--config", str(args.config)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {n} | failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]} |")
            continue
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        print("| " + " | ".join(str(report.get(c, "-")) for c in cols) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
