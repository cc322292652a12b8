"""CounterFact quality and cost of kbsync's editor on the bundled model, as a markdown table.

    .venv/bin/python benchmarks/eval_counterfact.py --device cuda --out /tmp/eval-bench
    .venv/bin/python benchmarks/eval_counterfact.py --quick            # CPU smoke run (minutes)
    .venv/bin/python benchmarks/eval_counterfact.py --scale --no-timing  # 100 batched / one at a time, 1000

Runs `kbsync eval` as a subprocess (each run its own process, so peak RSS is its own) on the
first N edits of ../shared/data/counterfact-train.json:
    1) N = 100 and N = 500 in one MEMIT batch
    2) 10 sequential batches of 50, plain MEMIT and AlphaEdit (retention of earlier batches)
    3) target optimisation, in process: compute_targets on 50 edits batched vs each alone,
       fixed steps, no early stop (the same code; seconds per edit and the speed-up)
--quick: N = 20, 2 sequential batches of 10, 5 edits for the target timing, 30-token GE.
--scale: N = 100 in one batch and the same 100 one at a time (--sequential --batch-size 1), and
N = 1000 in one batch: seconds and peak RSS per phase, edits/s (issue 12).
The model, layers and lambda come from the config (--config, else the bundled model and the
family defaults); every run's JSON report is written to --out beside summary.md.
Needs only torch, transformers, safetensors, tokenizers, gguf, click, rich, psutil and kbsync's
pure-python dependencies: heavy imports are local to the code that uses them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "counterfact-train.json"
COLUMNS = ("run", "", "ES", "PS", "NS", "score", "eff acc", "para acc", "GE", "retention", "targets s", "keys s",
           "solve s", "cov s", "edit s", "edits/s", "RSS MB", "RSS MB targets/keys/solve", "CUDA MB", "command")


def plan(quick: bool, scale: bool = False) -> list[tuple[str, list[str]]]:
    """(name, extra `kbsync eval` arguments) of every run."""
    if scale:  # issue 12: one batch vs one at a time through the same code, and a 1,000-edit batch
        return [("N=100, 1 batch", ["--limit", "100"]),
                ("N=100, one at a time", ["--limit", "100", "--sequential", "--batch-size", "1"]),
                ("N=1000, 1 batch", ["--limit", "1000"])]
    if quick:
        return [("N=20, 1 batch", ["--limit", "20"]),
                ("2x10 sequential, memit", ["--limit", "20", "--sequential", "--batch-size", "10"]),
                ("2x10 sequential, alphaedit",
                 ["--limit", "20", "--sequential", "--batch-size", "10", "--algorithm", "alphaedit"])]
    return [("N=100, 1 batch", ["--limit", "100"]),
            ("N=500, 1 batch", ["--limit", "500"]),
            ("10x50 sequential, memit", ["--limit", "500", "--sequential", "--batch-size", "50", "--algorithm", "memit"]),
            ("10x50 sequential, alphaedit",
             ["--limit", "500", "--sequential", "--batch-size", "50", "--algorithm", "alphaedit"])]


def run_eval(name: str, extra: list[str], args: argparse.Namespace, config: Path) -> tuple[list[str], dict | str]:
    out = args.out / (name.replace(" ", "").replace(",", "_").replace("=", "") + ".json")
    cmd = [sys.executable, "-m", "kbsync", "--config", str(config), "eval", "--dataset", str(args.data),
           "--device", args.device, "--json", str(out), *extra]
    if args.cov_samples:
        cmd += ["--cov-samples", str(args.cov_samples)]
    if args.gen_tokens is not None:
        cmd += ["--gen-tokens", str(args.gen_tokens)]
    print(f"# {name}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(f"#   exit {proc.returncode} after {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        return cmd, (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return cmd, json.loads(out.read_text())


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def rows_for(name: str, cmd: list[str], report: dict | str) -> list[str]:
    shown = "`kbsync " + shlex.join(cmd[cmd.index("eval"):]) + "`"
    if isinstance(report, str):
        return ["| " + " | ".join([name, "FAILED", report.replace("|", "/")] + [""] * (len(COLUMNS) - 4) + [shown]) + " |"]
    t = report["timings"]
    lines = []
    for side in ("pre", "post"):
        m = report[side]
        metrics = [_f(m[k]) for k in ("es", "ps", "ns", "score", "efficacy_acc", "paraphrase_acc")] + [_f(m["ge"], 1)]
        if side == "pre":
            lines.append("| " + " | ".join([name, "before", *metrics] + [""] * 11) + " |")
            continue
        costs = [_f(report.get("retention")), _f(t["targets_s"], 1), _f(t["keys_s"], 1), _f(t["solve_s"], 1),
                 _f(t["covariance_s"], 1) + (" (cached)" if t.get("covariance_cached") else ""), _f(t["edit_s"], 1),
                 _f(t["edits_per_s"], 2), _f(t["peak_rss_mb"], 0),
                 "/".join(_f(t.get(f"{p}_peak_rss_mb"), 0) for p in ("targets", "keys", "solve")),
                 _f(t.get("peak_cuda_mb"), 0), shown]
        lines.append("| " + " | ".join(["", "after", *metrics, *costs]) + " |")
    return lines


def targets_timing(config: Path, device: str, n: int, steps: int) -> str:
    """compute_targets on n edits in one batch vs each alone: same hparams, fixed steps."""
    import torch

    from kbsync.config import load_settings
    from kbsync.editing.configured import hyper_parameters, load_configured_model
    from kbsync.editing.request import EditRequest
    from kbsync.editing.targets import compute_targets, context_templates
    from kbsync.evaluation.datasets import load_cases, select

    settings = load_settings(str(config))
    settings = settings.model_copy(update={"model": settings.model.model_copy(update={"device": device})})
    lm = load_configured_model(settings, settings.state.dir)
    hp = hyper_parameters(settings, lm).replace(early_stop_loss=0.0, v_steps=steps)  # fixed work
    cases, _ = select(load_cases(DATA)[1], 0, n)
    reqs: list[EditRequest] = [c.request(i) for i, c in enumerate(cases)]
    tpl = context_templates(lm.model, lm.tokenizer, hp)
    cuda = lm.device.type == "cuda"

    def timed(batch: list[EditRequest]) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        compute_targets(lm.model, lm.tokenizer, lm.adapter, batch, hp, tpl)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    timed(reqs[:2])  # warm-up: kernels, allocator
    batched = timed(reqs)
    alone = sum(timed([r]) for r in reqs)
    return (f"target optimisation, {n} edits, {steps} steps, no early stop, {lm.device}: batched {batched:.2f}s "
            f"({batched / n:.3f}s/edit), one at a time {alone:.2f}s ({alone / n:.3f}s/edit), "
            f"speed-up {alone / batched:.1f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--quick", action="store_true", help="N=20, 2 sequential batches of 10 (CPU smoke run)")
    ap.add_argument("--scale", action="store_true",
                    help="N=100 in one batch and one at a time, and N=1000 in one batch (speed and memory)")
    ap.add_argument("--config", type=Path, default=None, help="kbsync config (default: the bundled model)")
    ap.add_argument("--state-dir", type=Path, default=Path("/tmp/kbsync-eval-state"),
                    help="state dir of the generated config (model and covariance caches)")
    ap.add_argument("--cov-samples", type=int, default=None, help="override [editing] cov_samples")
    ap.add_argument("--gen-tokens", type=int, default=None,
                    help="tokens per generation for GE (default 100; --quick: 30)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/kbsync-eval-bench"))
    ap.add_argument("--timing-steps", type=int, default=10, help="Adam steps in the batched-vs-alone timing")
    ap.add_argument("--no-timing", action="store_true", help="skip the batched-vs-alone target timing")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick and args.gen_tokens is None:
        args.gen_tokens = 30  # a loaded 2-core CPU generates ~5 tokens/s for 10 prompts
    config = args.config
    if config is None:
        config = args.out / "kbsync.toml"
        config.write_text(f'[state]\ndir = "{args.state_dir}"\n\n[model]\npath = "builtin:smollm2-135m"\n')

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    header = ""
    for name, extra in plan(args.quick, args.scale):
        cmd, report = run_eval(name, extra, args, config)
        lines += rows_for(name, cmd, report)
        if isinstance(report, dict):
            c = report["config"]
            header = (f"model {c['model']} on {c['device']} ({c['dtype']}), layers {c['layers']}, "
                     f"lambda {c['lambda']:g}, cov samples {c['cov_samples']}, v_steps {c['v_steps']}")
    summary = "\n\n".join(p for p in (header, "\n".join(lines)) if p)
    if not args.no_timing:
        n = 5 if args.quick else 50
        summary += "\n\n" + targets_timing(config, args.device, n, args.timing_steps)
    (args.out / "summary.md").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
