"""`kbsync eval`: edit a benchmark's counterfactuals into the configured model and measure."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kbsync.cli.main import cli
from kbsync.errors import StateError
from kbsync.runtime import App

METRIC_ROWS = (("es", "efficacy success (ES)"), ("ps", "paraphrase success (PS)"),
               ("ns", "neighbourhood success (NS)"), ("score", "score (harmonic mean)"),
               ("efficacy_acc", "efficacy accuracy"), ("paraphrase_acc", "paraphrase accuracy"),
               ("ge", "generation entropy (GE)"))


@cli.command(name="eval")
@click.option("--dataset", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CounterFact (original or EasyEdit schema) or zsRE (MEND schema) JSON file.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Edit at most this many cases.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many cases first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Edits per batch with --sequential (default [editing] batch_size); without it all edits are one batch.")
@click.option("--algorithm", type=click.Choice(["memit", "alphaedit"]), default=None,
              help="Editing algorithm (default [editing] algorithm).")
@click.option("--sequential", is_flag=True, help="Apply consecutive batches, each on the model edited so far; report retention.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Override [model] device.")
@click.option("--cov-samples", type=click.IntRange(min=1), default=None, help="Override [editing] cov_samples.")
@click.option("--corpus", default=None, help="Override [editing] corpus (model-samples, a .txt/.jsonl path, hf:<name>).")
@click.option("--norm-anchor/--no-norm-anchor", default=None,
              help="NAS norm anchoring of the target vectors (default [editing] norm_anchor).")
@click.option("--early-stop-prob", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="ENCORE early stop on the target's probability (default [editing] early_stop_prob; 0: off).")
@click.option("--norm-constraint", type=click.FloatRange(min=0), default=None,
              help="ENCORE norm constraint α (default [editing] norm_constraint; 0: off).")
@click.option("--gen-tokens", type=click.IntRange(min=0), default=100, show_default=True,
              help="Tokens generated per prompt for generation entropy (0: skip GE).")
@click.option("--gen-prompts", type=click.IntRange(min=0), default=10, show_default=True,
              help="Fixed prompts about the edited subjects for generation entropy.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as one JSON object to this file ('-': stdout only, no table).")
@click.pass_obj
def eval_cmd(app: App, dataset: Path, limit: int | None, offset: int, batch_size: int | None, algorithm: str | None,
             sequential: bool, device: str | None, cov_samples: int | None, corpus: str | None, gen_tokens: int,
             gen_prompts: int, norm_anchor: bool | None, early_stop_prob: float | None, norm_constraint: float | None,
             json_out: Path | None) -> None:
    """Measure editing quality and cost on a benchmark: ES, PS, NS, score, accuracies and
    generation entropy before and after editing, with timings and peak memory.

    The model and hyper-parameters come from the config; the model is left as it was (only
    caches under the state directory are written).

    Example: kbsync eval --dataset counterfact-train.json --limit 100 --json eval.json
    """
    from kbsync.cli.paths import output_file
    from kbsync.evaluation.run import evaluate_file

    if json_out is not None and str(json_out) != "-":
        output_file(json_out)  # fail before the model loads, not after the evaluation
    # evaluate_file reads the dataset before it loads the model: a bad file fails in seconds.
    report = evaluate_file(app.settings, app.state_dir, dataset, limit=limit, offset=offset, batch_size=batch_size,
                           algorithm=algorithm, sequential=sequential, device=device, cov_samples=cov_samples,
                           corpus=corpus, gen_tokens=gen_tokens, gen_prompts=gen_prompts, norm_anchor=norm_anchor,
                           early_stop_prob=early_stop_prob, norm_constraint=norm_constraint)
    text = json.dumps(report, indent=2)
    if json_out is not None and str(json_out) == "-":
        click.echo(text)
        return
    if json_out is not None:
        try:
            json_out.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise StateError(f"cannot write {json_out} ({exc.strerror or exc}); the report follows on stdout") from exc
    click.echo(render_table(report))


def render_table(report: dict) -> str:
    """The report as aligned text: metrics before/after, then costs."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    c = report["config"]
    title = (f"kbsync eval: {report['n_edits']} edits, {c['algorithm']} layers {c['layers']}, "
             f"{c['n_batches']} batch(es) of {c['batch_size']}{' sequential' if c['sequential'] else ''}, {c['device']}")
    table = Table()
    for col in ("metric", "before", "after"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in METRIC_ROWS:
        table.add_row(label, _fmt(report["pre"][key], key), _fmt(report["post"][key], key))
    if "retention" in report:
        table.add_row("retention (earlier batches)", "", _fmt(report["retention"], "retention"))
    t = report["timings"]
    cuda = f", peak CUDA {t['peak_cuda_mb']:.0f} MB" if t.get("peak_cuda_mb") is not None else ""
    cost = (f"covariance {t['covariance_s']:.1f}s{' (cached)' if t['covariance_cached'] else ''}, "
            f"targets {t['targets_s']:.1f}s, keys {t['keys_s']:.1f}s, solve {t['solve_s']:.1f}s, "
            f"edit {t['edit_s']:.1f}s, total {t['total_s']:.1f}s, {t['edits_per_s'] or 0:.2f} edits/s, "
            f"peak RSS {t['peak_rss_mb']:.0f} MB{cuda}")
    out = StringIO()
    Console(file=out, width=120).print(table)
    return f"{title}\n{out.getvalue()}{cost}"


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if key == "ge" else f"{value:.3f}"
