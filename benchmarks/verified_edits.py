"""Verified means this fact (issue 24): N facts changed in an RDF KB, applied in one batch, checked.

The KB: facts of ROME's known_1000 (the facts CounterFact's edits are made of) on relations in
the shipped catalogue; N of them (one per subject) are changed to a counterfactual value, another
object of the same relation, as CounterFact does. Steps, on the bundled model (or --model):

    1. diff on the true KB (the snapshot and the probes neighbours and known facts come from);
       what the model already gets wrong there is withdrawn: only the N changes are the test
    2. diff on the changed KB: the N changes are queued
    3. apply, one batch of N
    4. every request marked verified: its latest greedy efficacy check (SQL) names the KB value,
       and so does an exported copy of the model asked with plain transformers (greedy)

Prints a JSON object: verified, failed, requeued, per-request state, the SQL and transformers
agreement, and `batch_rule_would_verify`: edits a batch-level rule (the first round's shares
against [verify]'s thresholds) would have marked verified although their own checks failed.

Example (CPU, minutes):
    nice -n 5 .venv/bin/python benchmarks/verified_edits.py --n 40 --work /tmp/verified \
        --json docs/bench/verified_edits.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from make_kb import build_turtle  # noqa: E402
from sqlalchemy import select  # noqa: E402

from kbsync.config import Settings  # noqa: E402
from kbsync.sources.catalogue import fill, load_catalogue  # noqa: E402
from kbsync.store import db as store_db  # noqa: E402
from kbsync.store.models import Batch, EditCheck, EditRequestRow  # noqa: E402
from kbsync.store.states import RequestState  # noqa: E402
from kbsync.store.transitions import move_request  # noqa: E402
from kbsync.sync.apply import apply_pending  # noqa: E402
from kbsync.sync.from_settings import diff_from_settings, model_writer  # noqa: E402
from kbsync.verification.verdict import batch_rule_would_verify, limits  # noqa: E402
from kbsync.versions.registry import version_path  # noqa: E402

KNOWN = ROOT.parent / "shared" / "data" / "known_1000.json"


def pick(records: list[dict], n: int, relations: set[str], extra: int) -> tuple[list[dict], list[dict]]:
    """(the KB's records, the n changed ones): the first n subjects of catalogue relations (by
    known_id, one fact each), each moved to the next object of its relation; plus `extra` more
    true facts for neighbours and known facts."""
    usable = [r for r in records if r["relation_id"] in relations]
    objects: dict[str, list[str]] = defaultdict(list)
    for r in usable:
        if r["attribute"] not in objects[r["relation_id"]]:
            objects[r["relation_id"]].append(r["attribute"])
    chosen, seen = [], set()
    for r in usable:
        if r["subject"] in seen or len(objects[r["relation_id"]]) < 2:
            continue
        seen.add(r["subject"])
        chosen.append(r)
    changed_ids = {r["known_id"] for r in chosen[:n]}
    kb = chosen[:n + extra]
    changed = []
    for r in kb:
        if r["known_id"] in changed_ids:
            pool = sorted(objects[r["relation_id"]])
            new = pool[(pool.index(r["attribute"]) + 1) % len(pool)]
            changed.append(r | {"attribute": new, "was": r["attribute"]})
    return kb, changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--extra", type=int, default=160, help="unchanged facts beside the changed ones")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue()
    records = json.loads(KNOWN.read_text(encoding="utf-8"))
    kb, changed = pick(records, args.n, set(catalogue.ids()), args.extra)
    by_id = {r["known_id"]: r for r in changed}
    true_kb, new_kb = args.work / "true.ttl", args.work / "changed.ttl"
    changed_kb = [by_id.get(r["known_id"], r) for r in kb]
    labels = {r[k] for r in kb + changed_kb for k in ("subject", "attribute")}   # the same ids in both KBs
    true_kb.write_text(build_turtle(kb, numbered=labels), encoding="utf-8")
    new_kb.write_text(build_turtle(changed_kb, numbered=labels), encoding="utf-8")
    relations = sorted({r["relation_id"] for r in kb})
    url = f"sqlite:///{args.work / 'kbsync.db'}"
    for stale in ("kbsync.db", "kbsync.db-wal", "kbsync.db-shm"):
        (args.work / stale).unlink(missing_ok=True)
    store_db.upgrade(url)
    db = store_db.open_database(url)

    def settings(kb_file: Path) -> Settings:
        return Settings.model_validate({
            "state": {"dir": str(args.work / "state")}, "database": {"url": url},
            "model": {"path": args.model, "device": "cpu"},
            "kb": {"source": "rdf", "files": [str(kb_file)], "mode": "statements"},
            "relations": {"enabled": relations}, "editing": {"batch_size": args.n},
            "probe": {"sample_unchanged": 0}})   # the second diff probes the N changes only

    t0 = time.perf_counter()
    first = diff_from_settings(settings(true_kb), db, args.work / "state", run_id="true")
    with db.session() as s:    # the model's own errors on true facts are not this test
        for row in s.scalars(select(EditRequestRow).where(EditRequestRow.state == RequestState.PENDING.value)):
            move_request(s, row, RequestState.SUPERSEDED, "benchmark: not one of the changed facts", run_id="bench")
    second = diff_from_settings(settings(new_kb), db, args.work / "state", run_id="changed")
    t_diff = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = apply_pending(model_writer(settings(new_kb), db, args.work / "state", run_id="apply", worker="bench"),
                           batch_size=args.n, max_edits=args.n)
    t_apply = time.perf_counter() - t1

    out = summarise(db, report, args, first, second, t_diff, t_apply)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


def summarise(db, report, args, first, second, t_diff: float, t_apply: float) -> dict:  # type: ignore[no-untyped-def]
    settings = Settings.model_validate({"state": {"dir": str(args.work / "state")}})
    with db.session() as s:
        rows = list(s.scalars(select(EditRequestRow).where(EditRequestRow.state != RequestState.SUPERSEDED.value)
                              .order_by(EditRequestRow.id)))
        states = {r.id: r.state for r in rows}
        verified = [r for r in rows if r.state == RequestState.VERIFIED.value]
        latest: dict[int, bool] = {}
        for c in s.scalars(select(EditCheck).where(EditCheck.kind == "efficacy_acc").order_by(EditCheck.id)):
            latest[c.request_id] = c.passed
        batches = list(s.scalars(select(Batch).order_by(Batch.id)))
        prompts = {r.id: fill(r.prompt, r.subject_label) for r in verified}
        acceptable = {r.id: list(r.acceptable or [r.target_new]) for r in verified}
        reasons = {r.id: r.state_reason for r in rows if r.state == RequestState.FAILED.value}
    first_round = batches[0].metrics.get("first_round", {}) if batches else {}
    # the batch rule of earlier kbsync: every kind's share over the batch's first round >= its threshold
    rule_passes = all(first_round.get(k, 1.0) >= limit for k, limit in limits(settings.verify).items())
    would_verify = sum(batch_rule_would_verify(settings.verify, b.metrics) for b in batches)
    exported = transformers_answers(db, args, prompts, acceptable)
    return {
        "n_changed": args.n, "queued": second.queued, "probed_true_kb": first.probed,
        "probed_changed_kb": second.probed,
        "verified": len(verified), "failed": sum(st == "failed" for st in states.values()),
        "requeued_or_pending": sum(st == "pending" for st in states.values()),
        "verified_whose_latest_greedy_check_passed_sql": sum(latest.get(r.id, False) for r in verified),
        "verified_named_by_exported_model_transformers": sum(exported.values()),
        "first_round_shares": first_round, "batch_rule_passes_first_round": rule_passes,
        "batch_rule_would_verify_although_own_check_failed": would_verify,
        "batches": [{"id": b.id, "state": b.state, "metrics": b.metrics, "timings": b.timings} for b in batches],
        "failed_reasons": reasons,
        "seconds": {"diff": round(t_diff, 1), "apply": round(t_apply, 1),
                    "apply_per_verified_edit": round(t_apply / max(1, len(verified)), 1)},
    }


def transformers_answers(db, args, prompts: dict[int, str], acceptable: dict[int, list[str]]) -> dict[int, bool]:  # type: ignore[no-untyped-def]
    """The current version exported, loaded with plain transformers, asked greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kbsync.model.probe import answer_matches
    from kbsync.sync.from_settings import configured_model_key
    from kbsync.versions.store import export_version

    if not prompts:
        return {}
    settings = Settings.model_validate({"state": {"dir": str(args.work / "state")}, "model": {"path": args.model}})
    source = version_path(db, configured_model_key(settings, args.work / "state"), None)
    dest = args.work / "exported"
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    export_version(source, dest)
    tok = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest, torch_dtype=torch.float32).eval()
    out = {}
    for rid, prompt in prompts.items():
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
        answer = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        out[rid] = answer_matches(answer, acceptable[rid]) is not None
    return out


if __name__ == "__main__":
    main()
