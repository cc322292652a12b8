"""Lifelong editing on the bundled model: N sequential batches of k CounterFact edits per configuration.

    .venv/bin/python benchmarks/lifelong.py --device cuda --batches 40 --batch-size 50 --every 5 --out docs/bench/lifelong
    nice -n 10 .venv/bin/python benchmarks/lifelong.py --quick --out /tmp/lifelong      # CPU smoke run (minutes)

Each configuration (`--configs`, default all of CONFIGS) edits the same first N*k cases of
../shared/data/counterfact-train.json in batches of k, each on the model the earlier batches made
(kbsync.research.lifelong.run_lifelong; the model is restored between configurations). Every m
batches (`--every`) it records ES/PS/NS of the current batch, retention of all earlier edits, greedy
accuracy on every edit prompt so far, perplexity on fixed held-out text (the model's own samples
from a seed the covariance corpus does not use), accuracy on the facts of ../shared/data/known_1000.json
the base model answers right, the Frobenius norm of each edited weight relative to the base, and
seconds per batch. Writes lifelong.json, lifelong.png (curves) and summary.md (table) to --out.
A run that was stopped goes on from its last checkpoint with the same command and --resume.
--quick: 3 batches of 5, memit and memit+nas, 60 known facts, 4 held-out texts, 512 covariance texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# name -> [editing] overrides; the default daemon configuration is picked from these curves
CONFIGS: dict[str, dict[str, object]] = {
    "memit": {"algorithm": "memit", "edit_memory": 0.0},  # plain MEMIT: each batch solved on its own
    "memit+nas": {"algorithm": "memit", "edit_memory": 0.0, "norm_anchor": True},
    "alphaedit": {"algorithm": "alphaedit"},
    "alphaedit+nas": {"algorithm": "alphaedit", "norm_anchor": True},
    "alphaedit+nas+encore": {"algorithm": "alphaedit", "norm_anchor": True, "early_stop_prob": 0.9,
                             "norm_constraint": 10.0},
    # SmolLM2-135M's key second moments have no null space at the default threshold 2e-2: every
    # eigenvalue is >= 0.003, and the directions below 2e-2 carry 19-44 % of the keys' energy
    # (layers 8-4); stricter thresholds keep fewer directions for edits and protect more
    "alphaedit+nas@1e-2": {"algorithm": "alphaedit", "norm_anchor": True, "nullspace_threshold": 1e-2},
    "alphaedit+nas@5e-3": {"algorithm": "alphaedit", "norm_anchor": True, "nullspace_threshold": 5e-3},
    # λ = 1000 was chosen for one batch's ES (docs/layer-choice.md); a larger λ holds updates back
    "memit@lambda5000": {"algorithm": "memit", "edit_memory": 0.0, "cov_lambda": 5000.0},
    # MEMIT keeping every earlier batch's keys in its solve (edit_memory = mu)
    "memit+memory": {"algorithm": "memit", "edit_memory": 1.0},
    "memit+memory+nas": {"algorithm": "memit", "edit_memory": 1.0, "norm_anchor": True},
    "memit+memory@lambda5000": {"algorithm": "memit", "edit_memory": 1.0, "cov_lambda": 5000.0},
    # more edited layers: each carries a smaller share of every residual (ΔW_l ∝ R / (layers left))
    "memit+memory@layers3-10": {"algorithm": "memit", "edit_memory": 1.0, "layers": [3, 4, 5, 6, 7, 8, 9, 10]},
    "memit+memory@layers2-12": {"algorithm": "memit", "edit_memory": 1.0, "layers": list(range(2, 13))},
    # ENCORE's α‖ΔW‖² on top of edit memory: holds ΔW back where C's variance is small, where it is largest
    "memit+memory+norm10": {"algorithm": "memit", "edit_memory": 1.0, "norm_constraint": 10.0},
    "memit+memory+norm100": {"algorithm": "memit", "edit_memory": 1.0, "norm_constraint": 100.0},
    # smaller targets: ΔW ∝ R = z - h, and the known facts lost grow with ΔW's scale squared (known_damage.py);
    # stop each target sooner (ENCORE's p, default 0.9), or hold δ back harder (MEMIT's GPT-J weight decay 0.5,
    # clamp 0.75; SmolLM2's defaults are 1e-3 and 4)
    "memit+memory+stop0.5": {"algorithm": "memit", "edit_memory": 1.0, "early_stop_prob": 0.5},
    "memit+memory+wd0.5": {"algorithm": "memit", "edit_memory": 1.0, "weight_decay": 0.5},
    "memit+memory+clamp0.75": {"algorithm": "memit", "edit_memory": 1.0, "clamp_factor": 0.75},
    "memit+memory0.3": {"algorithm": "memit", "edit_memory": 0.3},
    "memit+memory3": {"algorithm": "memit", "edit_memory": 3.0},
    # "protect": keys of other facts the base model answers right (known_1000 after the --known probed
    # ones, --protect of them) kept in the solve with this weight, read again before every batch
    "memit+protect": {"algorithm": "memit", "edit_memory": 0.0, "protect": 10.0},
    "memit+memory+protect": {"algorithm": "memit", "edit_memory": 1.0, "protect": 10.0},
}
BENCH_KEYS = ("protect",)  # config keys the benchmark handles; the rest are [editing] hyper-parameters
QUICK_CONFIGS = ("memit", "memit+nas")


def heldout_texts(loaded, n: int, n_tokens: int = 64) -> list[str]:
    """n texts the base model samples from seed 1 (the covariance corpus uses seed 0)."""
    from kbsync.editing.covariance import ModelSampleCorpus

    corpus = ModelSampleCorpus(loaded.model, loaded.tokenizer, seed=1, n_tokens=n_tokens, batch_size=n)
    texts = corpus.texts()
    return [next(texts) for _ in range(n)]


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("retention", "retention of earlier edits"), ("edit_acc", "greedy accuracy, all edits so far"),
              ("es", "ES of the current batch"), ("ns", "NS of the current batch"),
              ("known_acc", "known-fact accuracy"), ("perplexity", "held-out perplexity"),
              ("weight_norm", "max ||W||/||W0|| of edited layers"), ("seconds_per_batch", "seconds per batch")]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    tab20 = plt.get_cmap("tab20").colors  # pairs (dark, light): the ten dark ones first, then the light ones
    colors = tab20[0::2] + tab20[1::2]  # one per configuration (the default cycle repeats after 10)
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for i, (name, res) in enumerate(results.items()):
            rows = [res["base"] | {"weight_norm": 1.0}] + res["checkpoints"]
            xs, ys = [], []
            for r in rows:
                value = max(w["norm"] for w in r["weights"].values()) if key == "weight_norm" else r.get(key)
                if value is not None:
                    xs.append(r["n_edits"])
                    ys.append(value)
            ax.plot(xs, ys, marker="o", label=name, color=colors[i % len(colors)])
        if key == "perplexity":
            ax.set_yscale("log")  # a collapse goes from ~10 to ~10^5
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("edits applied")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, dict]) -> str:
    head = ("config", "edits", "ES", "PS", "NS", "eff acc", "retention", "edit acc", "ppl", "known acc",
            "max ‖W‖/‖W0‖", "max ‖ΔW‖/‖W0‖", "s/batch", "CPU s/batch")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    for name, res in results.items():
        b = res["base"]
        lines.append(f"| {name} | 0 (base) | | | | | | | {f(b['perplexity'], 2)} | {f(b['known_acc'])} "
                     f"({b['known_facts']} facts) | 1.000 | 0.000 | | |")
        for r in res["checkpoints"]:
            w = r["weights"].values()
            lines.append(f"| {name} | {r['n_edits']} | {f(r['es'])} | {f(r['ps'])} | {f(r['ns'])} | "
                         f"{f(r['efficacy_acc'])} | {f(r['retention'])} | {f(r['edit_acc'])} | "
                         f"{f(r['perplexity'], 2)} | {f(r['known_acc'])} | {max(x['norm'] for x in w):.4f} | "
                         f"{max(x['delta'] for x in w):.4f} | {r['seconds_per_batch']:.1f} | "
                         f"{f(r.get('cpu_s_per_batch'), 1)} |")
    comp = [(n, r["compaction"]) for n, r in results.items() if r.get("compaction")]
    if comp:
        lines += ["", "| config | edits | compaction chunk | retention, sequential log | retention, compacted | greedy acc, compacted "
                  "| known acc, sequential / compacted | perplexity, sequential / compacted | re-solve s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {n} | {results[n]['checkpoints'][-1]['n_edits']} | {c.get('chunk', '')} | "
                  f"{f(c['retention_sequential'])} | "
                  f"{f(c['retention_compacted'])} | {f(c['edit_acc_compacted'])} | "
                  f"{f(results[n]['checkpoints'][-1].get('known_acc'))} / {f(c.get('known_acc_compacted'))} | "
                  f"{f(results[n]['checkpoints'][-1].get('perplexity'))} / {f(c.get('perplexity_compacted'))} | "
                  f"{c['seconds']:.0f} |" for n, c in comp]
    return "\n".join(lines) + "\n"


def merge(paths: list[Path], out: Path) -> int:
    """Several runs' lifelong.json (one config each, run side by side, or an earlier merge) -> one JSON,
    table and plot; a configuration in a later file replaces the same one in an earlier file."""
    results: dict[str, dict] = {}
    commands: list[str] = []
    for path in paths:
        data = json.loads(path.read_text())
        commands += data["commands"] if "commands" in data else [data["command"]]
        results.update({n: r for n, r in data["results"].items() if r.get("base") is not None})
    if not results:
        print(f"error: no finished configuration in {', '.join(map(str, paths))}; merge after a run ends",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "lifelong.json").write_text(json.dumps({"commands": commands, "results": results}, indent=1) + "\n")
    plot(results, out / "lifelong.png")
    (out / "summary.md").write_text(table(results))
    print(table(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 batches of 5, two configs, small probes (CPU)")
    parser.add_argument("--configs", default=None, help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--batches", type=int, default=40, help="N sequential batches")
    parser.add_argument("--batch-size", type=int, default=50, help="k edits per batch")
    parser.add_argument("--every", type=int, default=5, help="a checkpoint every m batches (and after the last)")
    parser.add_argument("--known", type=int, default=300, help="known_1000 facts probed (those the base knows count)")
    parser.add_argument("--protect", type=int, default=300,
                        help="known_1000 facts after the probed ones whose keys a 'protect' config keeps")
    parser.add_argument("--heldout", type=int, default=16, help="held-out texts for perplexity")
    parser.add_argument("--data", type=Path, default=DATA / "counterfact-train.json")
    parser.add_argument("--known-file", type=Path, default=DATA / "known_1000.json")
    parser.add_argument("--config", type=Path, default=None, help="kbsync config (model, layers, λ); default built-in")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".kbsync", help="model and key-statistics caches")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--corpus", default=None, help="key-statistics corpus (default [editing] corpus)")
    parser.add_argument("--cov-samples", type=int, default=None)
    parser.add_argument("--compact", action="store_true",
                        help="after the last batch, re-solve every edit from the base as one delta (kbsync compact) "
                             "and compare its retention with the sequential log's")
    parser.add_argument("--compact-batch-size", type=int, default=0,
                        help="edits per mass edit of that re-solve ([editing] compact_batch_size; 0: --batch-size)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the last checkpoint of a run with the same options that was stopped "
                             "(each checkpoint leaves one under STATE_DIR/lifelong/CONFIG)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (one config per process, several processes side by side)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                        help="only merge lifelong.json files of earlier runs into --out (table and plot)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "lifelong")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    if args.quick:
        args.batches, args.batch_size, args.every = 3, 5, 1
        args.known, args.heldout = 60, 4
        args.corpus = args.corpus or "builtin:smollm2-samples"
        args.cov_samples = args.cov_samples or 512
    names = args.configs.split(",") if args.configs else list(QUICK_CONFIGS if args.quick else CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; choose from {', '.join(CONFIGS)}")

    from kbsync.config import load_settings
    from kbsync.editing.configured import corpus_for, hyper_parameters, load_configured_model
    from kbsync.editing.covariance import second_moments
    from kbsync.evaluation.datasets import load_cases, select
    from kbsync.evaluation.run import relation_phrasings
    from kbsync.research.lifelong import load_known_facts, run_lifelong

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = load_settings(args.config)
    settings = settings.model_copy(update={"model": settings.model.model_copy(update={"device": args.device})})
    args.out.mkdir(parents=True, exist_ok=True)
    _, all_cases = load_cases(args.data)
    cases, _ = select(all_cases, 0, args.batches * args.batch_size)
    every_known = load_known_facts(args.known_file)
    known, protect = every_known[:args.known], every_known[args.known:args.known + args.protect]
    t0 = time.perf_counter()
    loaded = load_configured_model(settings, args.state_dir)
    base_hp = hyper_parameters(settings, loaded)
    if args.cov_samples:
        base_hp = base_hp.replace(cov_samples=args.cov_samples)
    corpus = corpus_for(args.corpus or settings.editing.corpus, loaded)
    layers = sorted({*base_hp.layers, *(x for n in names for x in CONFIGS[n].get("layers", ()))})  # type: ignore[union-attr]
    moments = second_moments(loaded, loaded.tokenizer, loaded.adapter, layers, corpus, base_hp.cov_samples,
                             args.state_dir / "cache" / "stats", model_identity=loaded.identity)
    heldout = heldout_texts(loaded, args.heldout)
    print(f"# model, key statistics and held-out text in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    results: dict[str, dict] = {}
    out_json = args.out / "lifelong.json"

    def save() -> None:
        out_json.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1) + "\n")
    for name in names:
        overrides = {k: v for k, v in CONFIGS[name].items() if k not in BENCH_KEYS}
        hp = base_hp.replace(**overrides)  # type: ignore[arg-type]
        protect_weight = float(CONFIGS[name].get("protect", 0.0))  # type: ignore[arg-type]
        t0 = time.perf_counter()

        def partial(name: str = name) -> dict:
            return results.setdefault(name, {"base": None, "checkpoints": [], "config": dict(CONFIGS[name]),
                                             "partial": True})

        def base_measured(row: dict, name: str = name) -> None:
            partial(name)["base"] = row

        def progress(row: dict, name: str = name) -> None:
            print(f"# {name}: {row['n_edits']} edits, retention {row['retention']}, known {row['known_acc']}, "
                  f"ppl {row['perplexity']}, {row['seconds_per_batch']:.1f} s/batch", file=sys.stderr, flush=True)
            partial(name)["checkpoints"].append(row)
            save()  # now: a long run that is cut short keeps its curve

        res = run_lifelong(loaded, hp, moments, cases, batch_size=args.batch_size, n_batches=args.batches,
                           every=args.every, known=known, heldout=heldout, protect=protect,
                           protect_weight=protect_weight,
                           paraphrases=relation_phrasings(args.data), on_checkpoint=progress, on_base=base_measured,
                           compact=args.compact, compact_chunk=args.compact_batch_size, snapshots=args.state_dir / "lifelong" / name,
                           resume=args.resume)
        res["config"].update(name=name, corpus=corpus.identity, model=loaded.spec,
                             wall_s=round(time.perf_counter() - t0, 1))
        results[name] = res
        save()
    plot(results, args.out / "lifelong.png")
    (args.out / "summary.md").write_text(table(results))
    print(table(results))
    print(f"# wrote {out_json}, {args.out / 'lifelong.png'}, {args.out / 'summary.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
