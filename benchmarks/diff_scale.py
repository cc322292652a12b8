"""`kbsync diff` at Wikidata scale (issue 12): time and peak RSS of a first and an incremental read.

    python benchmarks/diff_scale.py --facts 100000 --facts 1000000 --db sqlite --db postgresql \
        [--model tiny|PATH|builtin:smollm2-135m] [--work DIR] [--json OUT]

For each size it writes Wikidata-shaped N-Triples (``p:``/``ps:`` statements with a rank and a
``pq:P580`` start, subjects with ``rdfs:label`` and ``schema:dateModified``, objects with labels;
two single-valued relations per subject, P6 and P36), and a copy where 1 % of the facts changed
the way Wikidata records it: the current statement gets a ``pq:P582`` end, a new statement starts
the same day, and the subject's dateModified moves. Then, per database (a fresh SQLite file; a
fresh PostgreSQL database on the server of ``KBSYNC_TEST_POSTGRES_URL``, dropped afterwards):

1. ``kbsync db upgrade``
2. first read: ``kbsync diff --snapshot-only`` records every fact as the baseline and probes
   nothing (adopting an existing KB; probing 1M facts on a CPU would take days);
3. incremental read: ``kbsync diff`` on the changed file probes what changed (1 % of the facts)
   plus the rotating sample of unchanged facts ([probe] sample_unchanged, 50), and queues the
   disagreements. Probing is real: the model named by --model is loaded and asked each prompt.
   ``tiny`` (the default) is a random 4-layer Llama (hidden 32) made by this script, so that the
   probing, which is not what this measures, does not dominate; the bundled model probes about
   7 facts/s on 2 CPU cores (docs/how-it-works.md, "Probing"). Probe batches of 128 ([probe] batch_size).

Every kbsync command runs in its own process; its peak RSS comes from ``os.wait4`` (that process
and its children), its time from the wall clock around it. An RDF file is read whole on every run
(only SPARQL reads are incremental by dateModified), so the incremental read parses the whole
file again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

WD = "http://www.wikidata.org/entity/"
P, PS, PQ = "http://www.wikidata.org/prop/", "http://www.wikidata.org/prop/statement/", "http://www.wikidata.org/prop/qualifier/"
RANK = "<http://wikiba.se/ontology#rank> <http://wikiba.se/ontology#NormalRank>"
LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"
MODIFIED = "<http://schema.org/dateModified>"
DATE = "^^<http://www.w3.org/2001/XMLSchema#dateTime>"
RELATIONS = ("P6", "P36")
AS_OF = "2026-01-01"


def changed(i: int) -> bool:
    return i % 100 == 37  # 1 % of the facts, spread over the file


def write_kb(path: Path, n: int, with_changes: bool) -> None:
    """n facts: subject Q9…(i // 2), relation P6 / P36 (i % 2), object one of n/100 places."""
    m = max(1000, n // 100)
    with path.open("w", buffering=1 << 20) as f:
        w = f.write
        for j in range(m):
            w(f'<{WD}Q8{j:09d}> {LABEL} "Place {j}"@en .\n')
        for s in range((n + 1) // 2):
            subject, touched = f"<{WD}Q9{s:09d}>", False
            for r, relation in enumerate(RELATIONS):
                i = 2 * s + r
                if i >= n:
                    break
                obj = (i * 2654435761) % m
                st = f"<{WD}statement/s{i}-a>"
                w(f"{subject} <{P}{relation}> {st} .\n{st} <{PS}{relation}> <{WD}Q8{obj:09d}> .\n{st} {RANK} .\n"
                  f'{st} <{PQ}P580> "2020-01-01T00:00:00Z"{DATE} .\n')
                if with_changes and changed(i):
                    touched = True
                    new = f"<{WD}statement/s{i}-b>"
                    w(f'{st} <{PQ}P582> "2025-06-01T00:00:00Z"{DATE} .\n'
                      f"{subject} <{P}{relation}> {new} .\n{new} <{PS}{relation}> <{WD}Q8{(obj + 1) % m:09d}> .\n"
                      f'{new} {RANK} .\n{new} <{PQ}P580> "2025-06-01T00:00:00Z"{DATE} .\n')
            w(f'{subject} {LABEL} "Entity {s}"@en .\n'
              f'{subject} {MODIFIED} "{"2025-06-02" if touched else "2024-01-01"}T00:00:00Z"{DATE} .\n')


def tiny_model(out: Path) -> Path:
    """A random 4-layer Llama (hidden 32) with a byte-level BPE, as the tests use."""
    if (out / "config.json").exists():
        return out
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [f"The capital of Entity {i} is Place {i * 7}. Entity {i} is led by Place {i}." for i in range(200)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def kbsync(args: list[str], env: dict[str, str], logs: Path) -> tuple[float, float, str]:
    """Run `kbsync ARGS` in its own process: (seconds, peak RSS MB of it and its children, stdout)."""
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    t0 = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kbsync", *args], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's maximum
        proc.returncode = code = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"kbsync {' '.join(args)} failed ({code}):\n{err_path.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, out_path.read_text()  # ru_maxrss: KiB on Linux


class Database:
    def __init__(self, kind: str, state: Path):
        self.kind, self.name = kind, f"kbsync_bench_{uuid.uuid4().hex[:10]}"
        if kind == "sqlite":
            self.url = f"sqlite:///{state / 'kbsync.db'}"
            return
        from sqlalchemy import create_engine, make_url, text

        base = os.environ.get("KBSYNC_TEST_POSTGRES_URL")
        if not base:
            raise SystemExit("set KBSYNC_TEST_POSTGRES_URL (a PostgreSQL server URL) for --db postgresql")
        self._admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = make_url(base).set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        if self.kind == "postgresql":
            from sqlalchemy import text

            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self._admin.dispose()


def measure(n: int, kind: str, model: str, work: Path) -> list[dict[str, object]]:
    first, second = work / f"kb-{n}.nt", work / f"kb-{n}-changed.nt"
    for path, with_changes in ((first, False), (second, True)):
        if not path.exists():
            write_kb(path.with_suffix(".tmp"), n, with_changes)
            path.with_suffix(".tmp").rename(path)
    state = work / f"state-{n}-{kind}-{uuid.uuid4().hex[:6]}"
    state.mkdir()
    db = Database(kind, state)
    env = {**os.environ, "KBSYNC_STATE__DIR": str(state), "KBSYNC_DATABASE__URL": db.url,
           "KBSYNC_MODEL__PATH": model, "KBSYNC_MODEL__DEVICE": "cpu", "KBSYNC_RELATIONS__ENABLED": str(list(RELATIONS)),
           "KBSYNC_LOGGING__LEVEL": "warning", "KBSYNC_PROBE__BATCH_SIZE": "128"}
    rows = []
    try:
        kbsync(["db", "upgrade"], env, state / "upgrade")
        for step, (label, path, extra) in enumerate((("first (--snapshot-only)", first, ["--snapshot-only"]),
                                                     ("incremental (1 % changed)", second, []))):
            env["KBSYNC_KB__FILES"] = json.dumps([str(path)])
            seconds, rss, out = kbsync(["diff", "--json", "--as-of", AS_OF, *extra], env, state / f"diff{step}")
            report = json.loads(out)
            row = {"facts": n, "database": "SQLite" if kind == "sqlite" else "PostgreSQL", "read": label,
                   "seconds": round(seconds, 1), "peak_rss_mb": round(rss), "probed": report["probed"],
                   "new": report["new"], "changed": report["changed"], "queued": report["queued"],
                   "seconds_read": round(report["seconds_read"], 1), "seconds_compare": round(report["seconds_compare"], 1),
                   "seconds_probe": round(report["seconds_probe"], 1), "seconds_write": round(report["seconds_write"], 1),
                   "load_1min_after": round(os.getloadavg()[0], 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        db.drop()
    return rows


def table(rows: list[dict[str, object]]) -> str:
    out = ["| facts | database | read | seconds (read / compare / probe / write) | peak RSS MB | facts probed | queued |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['facts']:,} | {r['database']} | {r['read']} | {r['seconds']} ({r['seconds_read']} / "
                   f"{r['seconds_compare']} / {r['seconds_probe']} / {r['seconds_write']}) | {r['peak_rss_mb']} | "
                   f"{r['probed']:,} | {r['queued']:,} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, action="append", help="KB size (repeatable; default 100000)")
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"], help="repeatable; default both")
    parser.add_argument("--model", default="tiny", help="tiny (a random tiny Llama), a HF directory, or builtin:smollm2-135m")
    parser.add_argument("--work", type=Path, default=Path(".bench-diff-scale"), help="generated KBs and state dirs")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here too")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = str(tiny_model(args.work / "tiny-llama")) if args.model == "tiny" else args.model
    rows = []
    for n in args.facts or [100_000]:
        for kind in args.db or ["sqlite", "postgresql"]:
            rows += measure(n, kind, model, args.work)
    print(f"\nmodel: {args.model}; load: {os.getloadavg()}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
