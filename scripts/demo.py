"""`make demo`: kbsync's whole flow on the embedded defaults, step by step.

The bundled model (SmolLM2-135M-Instruct), the demo KB shipped in kbsync/data/demo.ttl
(facts the model knows, plus five the KB now states differently), SQLite:

    db upgrade → diff → apply → answers before/after → audit → rollback → answers again

State lives in .kbsync-demo/ (the model cache and key statistics are kept between runs; the
database and the model store start afresh each time). `--sparql` serves the same KB from a
local Oxigraph SPARQL server (started and stopped here), as production reads Wikidata.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kbsync.config import Settings
from kbsync.verification.verdict import batch_rule_would_verify

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".kbsync-demo"
DEMO_KB = ROOT / "kbsync" / "data" / "demo.ttl"
# As wide as the terminal (at least 120 columns), and table cells fold instead of being cut.
console = Console(width=max(shutil.get_terminal_size((120, 40)).columns, 120))

SHARES = ("Each edit is verified on its own checks: its greedy answer names the KB value, so do enough of its "
          "paraphrases, and its neighbours (facts answered right before) keep their answers. An edit that "
          "fails is dropped and the rest of its batch solved again without it; only edits whose own checks "
          "passed are published. apply's table, per batch: claimed / verified / failed / back in the queue, "
          "the shares of the published edits' checks (efficacy_acc = greedy answer names the value, "
          "paraphrase_acc = on reworded prompts, neighbour_acc = neighbours kept), and the facts it holds.")

GATE = ("Before each batch's version becomes current, the regression gate compares it with the previous "
        "version and the base model: perplexity on held-out text, accuracy on facts the model knew, and "
        "whether earlier edits still hold ([gate] settings); `kbsync status` shows the figures. A fact "
        "answered right before a batch and wrong after it is damage: flagged against the batch, not queued.")

AUDIT_SQL = {
    "what did each batch change?": "SELECT batch_id, subject_label, relation, target_old, target_new, request_state "
                                   "FROM v_batch_changes ORDER BY batch_id, request_id;",
    "the history of one fact": "SELECT at, from_state, to_state, reason FROM v_fact_history "
                               "WHERE subject_label = '{subject}' ORDER BY at, transition_id;",
    "failed edits and why": "SELECT subject_label, relation, target_new, reason FROM v_failed_edits;",
    "what did each batch damage?": "SELECT batch_id, subject_label, relation, expected, answer, found_by, state "
                                   "FROM v_batch_damage;",
    "the regression gate's figures": "SELECT scope, batch_id, perplexity, known_acc, retention, passed, reason "
                                     "FROM v_gate_figures;",
}


def kbsync(*args: str, env: dict[str, str], capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "kbsync", "--log-level", "warning", *args]
    if not capture:
        console.print(f"\n[bold]$ kbsync {' '.join(args)}[/bold]")
    result = subprocess.run(cmd, env=env, cwd=ROOT, text=True, capture_output=capture)
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stderr)
        raise SystemExit(f"demo step failed: kbsync {' '.join(args)} (exit {result.returncode})")
    return result.stdout if capture else ""


def step(n: int, text: str) -> None:
    console.rule(f"[bold cyan]{n}. {text}")


def full_diff(env: dict[str, str]) -> dict[tuple[str, str], dict[str, object]]:
    """Every KB fact's row of a dry-run full diff (`kbsync diff --full --dry-run`): writes nothing."""
    report = json.loads(kbsync("diff", "--full", "--dry-run", "--json", env=env, capture=True))
    return {(r["subject"], r["relation"]): r for r in report["rows"]}


def answers(env: dict[str, str]) -> dict[tuple[str, str], str]:
    """The model's current answer to every KB fact."""
    return {key: str(row["model_answer"]) for key, row in full_diff(env).items()}


def damage_line(before: dict[tuple[str, str], dict[str, object]],
                after: dict[tuple[str, str], dict[str, object]]) -> dict[str, object]:
    """Facts the model had right before apply and has wrong now: each must be flagged against its
    batch (action "damaged"), never queued as a new KB disagreement (issue 13)."""
    broken = sorted(k for k, row in after.items() if row["action"] != "agrees" and before.get(k, {}).get("action") == "agrees")
    flagged = [k for k in broken if after[k]["action"] == "damaged"]
    unflagged = [k for k in broken if k not in flagged]
    right = sum(1 for row in before.values() if row["action"] == "agrees")
    if not broken:
        console.print(f"[bold green]damage: none[/bold green] - all {right} facts the model had right before "
                      "apply it still has right (a full dry-run diff)")
    else:
        by_batch: dict[object, list[str]] = {}
        for k in flagged:
            by_batch.setdefault(after[k]["damaged_by"], []).append(f"{after[k]['subject_label']} {k[1]}")
        where = "; ".join(f"batch {b}: {', '.join(names)}" for b, names in sorted(by_batch.items(), key=str))
        style = "bold yellow" if not unflagged else "bold red"
        console.print(f"[{style}]damage: {len(broken)} of {right} facts the model had right before apply are wrong "
                      f"now; {len(flagged)} flagged against their batch and not queued ({where})"
                      + (f"; NOT flagged: {unflagged}" if unflagged else "") + f"[/{style}]")
    return {"right_before": right, "wrong_now": len(broken), "flagged": len(flagged),
            "unflagged": [list(k) for k in unflagged]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_oxigraph(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("oxigraph", path=str(Path(sys.executable).parent)) or shutil.which("oxigraph")
    if exe is None:
        raise SystemExit("the oxigraph server is not installed: pip install oxigraph (make demo-sparql does)")
    store = workdir / "oxigraph"
    subprocess.run([exe, "load", "--location", str(store), "--file", str(DEMO_KB)], check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([exe, "serve", "--location", str(store), "--bind", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}/query"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{endpoint}?query=ASK%7B%7D", timeout=1).read()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("the local Oxigraph server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparql", action="store_true", help="read the KB from a local Oxigraph SPARQL server")
    parser.add_argument("--state-dir", type=Path, default=STATE, help="where the demo keeps its state")
    parser.add_argument("--model", default=None, help="[model] path (default: the bundled model)")
    parser.add_argument("--summary", type=Path, default=None, help="also write the answers as JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    state = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    for stale in ("kbsync.db", "kbsync.db-wal", "kbsync.db-shm", "store", "locks"):
        path = state / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBSYNC_")}
    env |= {
        "KBSYNC_STATE__DIR": str(state),
        "KBSYNC_KB__FILES": json.dumps([str(DEMO_KB)]),
        # key statistics from text the model sampled once (kbsync/data/smollm2-samples.txt):
        # the same distribution as [editing] corpus = "model-samples", without minutes of sampling
        "KBSYNC_EDITING__CORPUS": "builtin:smollm2-samples",
        "KBSYNC_EDITING__COV_SAMPLES": "512",
        "KBSYNC_EDITING__BATCH_SIZE": "3",
    }
    if args.model:
        env["KBSYNC_MODEL__PATH"] = args.model
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="kbsync-demo-"))
    try:
        if args.sparql:
            server, endpoint = start_oxigraph(tmp)
            env |= {"KBSYNC_KB__SOURCE": "sparql", "KBSYNC_KB__ENDPOINT": endpoint}
            console.print(f"serving {DEMO_KB.name} from a local Oxigraph SPARQL server at {endpoint}")
        summary = run(env, state)
        if args.summary:
            args.summary.write_text(json.dumps(summary, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"\n[bold green]demo finished in {time.perf_counter() - started:.0f} s[/bold green]")


def run(env: dict[str, str], state: Path) -> dict[str, object]:
    step(1, "create the SQLite schema (Alembic migrations)")
    kbsync("db", "upgrade", env=env)

    step(2, "diff: read the KB, ask the model, queue where they disagree")
    before_rows = full_diff(env)
    before = {key: str(row["model_answer"]) for key, row in before_rows.items()}
    kbsync("diff", env=env)

    step(3, "apply: write the queued facts into the weights (MEMIT batches), verify each edit on its own")
    kbsync("apply", env=env)
    console.print(SHARES)
    console.print(GATE)
    after_rows = full_diff(env)
    after = {key: str(row["model_answer"]) for key, row in after_rows.items()}
    damage = damage_line(before_rows, after_rows)

    db = sqlite3.connect(state / "kbsync.db")
    would = sum(batch_rule_would_verify(Settings().verify, json.loads(m) if m else None)
                for (m,) in db.execute("SELECT metrics FROM batches"))
    console.print(f"per-edit verdicts: a batch-level rule (each share over the batch) would have marked {would} "
                  "edit(s) verified although their own checks failed")
    changed = db.execute("SELECT subject, relation, subject_label, target_new, batch_id, state FROM edit_requests "
                         "ORDER BY id").fetchall()
    table = Table(title="the model's answers to the changed facts")
    for col in ("subject", "relation", "KB now says", "before apply", "after apply", "batch", "state"):
        table.add_column(col, overflow="fold")
    for subject, relation, label, target, batch, request_state in changed:
        table.add_row(label, relation, target, before.get((subject, relation), ""), after.get((subject, relation), ""),
                      str(batch), request_state)
    console.print(table)

    step(4, "audit: what changed, in which batch, and did it work?")
    kbsync("audit", env=env)
    last = db.execute("SELECT max(id) FROM batches WHERE state = 'verified'").fetchone()[0]
    if last is None:
        console.print("no batch was verified; see `kbsync audit --failed`")
        return {"rolled_back_batch": None, "changed": [], "damage": damage}
    kbsync("audit", "--batch", str(last), env=env)
    kbsync("audit", "--damage", env=env)

    step(5, f"rollback: undo batch {last} and re-verify the remaining edits")
    kbsync("rollback", str(last), env=env)
    back = answers(env)
    rows = []
    table = Table(title=f"answers after rolling back batch {last}")
    for col in ("subject", "relation", "after apply", "after rollback", "request state"):
        table.add_column(col, overflow="fold")
    for subject, relation, label, target, *_ in changed:
        request_state = db.execute("SELECT state FROM edit_requests WHERE subject = ? AND relation = ?",
                                   (subject, relation)).fetchone()[0]
        table.add_row(label, relation, after.get((subject, relation), ""), back.get((subject, relation), ""), request_state)
        rows.append({"subject": subject, "relation": relation, "label": label, "kb": target,
                     "before": before.get((subject, relation), ""), "after": after.get((subject, relation), ""),
                     "after_rollback": back.get((subject, relation), ""), "state": request_state})
    console.print(table)
    kbsync("status", env=env)

    step(6, "next: ask the audit trail yourself")
    subject = changed[0][2] if changed else "France"
    for question, sql in AUDIT_SQL.items():
        console.print(f"# {question}\nsqlite3 {state}/kbsync.db \"{sql.format(subject=subject)}\"", soft_wrap=True)
    db.close()
    return {"rolled_back_batch": last, "changed": rows, "damage": damage}


if __name__ == "__main__":
    main()
