"""kbsync on real changes: diff -> apply -> what the model says, on the bundled model.

The KB is benchmarks/real_changes_kb.py (89 facts of P6, P35, P54, P169, P286, P488, P1037,
P1308 with 88 real changes of holder, as of 2025-06-01, sources cited there), written as
Wikidata-shaped Turtle with time qualifiers and read as of 2025-06-01. Prints:

- queued_current: the share of queued edits whose target is a holder current on
  2025-06-01 (the truth computed from the table, not by kbsync), in statements mode (the
  default) and, for comparison, in truthy mode (wdt:, which lists ended holders too);
- after apply (the shipped catalogue's prompts): greedy accuracy on the catalogue prompt
  (efficacy_acc) and on its paraphrases (paraphrase_acc), over every queued edit, and split
  into same-subject edits (a subject with more than one queued edit, e.g. a country's head
  of state and head of government) versus the others;
- held-out phrasings never trained on (real_changes_kb.HELD_OUT), as completions and, for a model
  with a chat template, their questions asked in it (the answer names the holder in its first
  sentence), over all queued and over verified edits, also without the one phrasing whose question
  is the catalogue's own (apply trains on that: [editing] question_rows);
- the verified edits' own held-out checks (held_out_acc: the catalogue question in the forms not
  trained on), how many a [verify] min_held_out_acc of 0.5 or 1 would leave verified, and the
  HELD_OUT share of the edits passing them against the others'.

Example (CPU: the diff takes a minute, the ~80 edits tens of minutes):
    nice -n 5 .venv/bin/python benchmarks/real_changes.py --work /tmp/real-changes \
        --stats-dir .kbsync-test-state/shared-stats --json real_changes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heldout_phrasings import chat, editing_overrides, question  # noqa: E402
from real_changes_kb import AS_OF, CHANGES, HELD_OUT, current, write_kb  # noqa: E402
from sqlalchemy import select  # noqa: E402

from kbsync.config import Settings  # noqa: E402
from kbsync.model.loading import load_model  # noqa: E402
from kbsync.model.probe import answer_matches, names_in_sentence  # noqa: E402
from kbsync.model.scoring import greedy_answers  # noqa: E402
from kbsync.model.tokens import PLAIN_ANSWER  # noqa: E402
from kbsync.sources.catalogue import fill  # noqa: E402
from kbsync.sources.factory import open_catalogue  # noqa: E402
from kbsync.store import db as store_db  # noqa: E402
from kbsync.store.models import Batch, EditCheck, EditRequestRow, GateFigures  # noqa: E402
from kbsync.sync.apply import apply_pending  # noqa: E402
from kbsync.sync.compact import compact  # noqa: E402
from kbsync.sync.from_settings import current_model, diff_from_settings, model_writer  # noqa: E402
from kbsync.verification.verdict import batch_rule_would_verify  # noqa: E402

RELATIONS = ["P6", "P35", "P54", "P169", "P286", "P488", "P1037", "P1308"]

def settings_for(work: Path, kb: Path, mode: str, args: argparse.Namespace) -> Settings:
    return Settings.model_validate({
        "state": {"dir": str(work / "state")},
        "database": {"url": f"sqlite:///{work / f'{mode}.db'}"},
        "model": {"path": args.model, "device": args.device},
        "kb": {"files": [str(kb)], "mode": mode, "as_of": AS_OF.isoformat()},
        "relations": {"enabled": RELATIONS},
        "editing": {"corpus": args.corpus, "cov_samples": args.cov_samples, **editing_overrides(args.editing)},
    })


def queued(settings: Settings) -> list[EditRequestRow]:
    db = store_db.open_database(settings.database_url)
    with db.session() as s:
        rows = list(s.scalars(select(EditRequestRow).where(EditRequestRow.state != "superseded")
                              .order_by(EditRequestRow.id)))
        s.expunge_all()
    db.dispose()
    return rows


def queued_current(rows: list[EditRequestRow], truth: dict[tuple[str, str], list[str]]) -> dict[str, object]:
    ok = sum(r.target_new in truth[r.subject_label, r.relation] for r in rows)
    return {"queued": len(rows), "target_current": ok, "share": round(ok / len(rows), 3) if rows else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/real-changes"))
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corpus", default="builtin:smollm2-samples")
    parser.add_argument("--cov-samples", type=int, default=512)
    parser.add_argument("--stats-dir", type=Path, default=None, help="a key-statistics cache to reuse")
    parser.add_argument("--batch-size", type=int, default=None, help="edits per batch (default: [editing])")
    parser.add_argument("--editing", action="append", default=[], metavar="KEY=VALUE",
                        help="an [editing] setting (repeatable; values read as JSON), e.g. --editing 'layers=[2,3,4,5,6]'")
    parser.add_argument("--no-apply", action="store_true", help="only the diff figures")
    parser.add_argument("--max-edits", type=int, default=None, help="apply at most this many (a partial run)")
    parser.add_argument("--compact", action="store_true", help="then `kbsync compact` the applied log and measure it")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    kb = args.work / "real_changes.ttl"
    write_kb(kb)
    truth = {(subject, relation): current(holders) for relation, subject, holders, _ in CHANGES}
    (args.work / "state" / "cache").mkdir(parents=True, exist_ok=True)
    if args.stats_dir and not (args.work / "state" / "cache" / "stats").exists():
        (args.work / "state" / "cache" / "stats").symlink_to(args.stats_dir.resolve())
    loaded = load_model(args.model, state_dir=args.work / "state", device=args.device)
    out: dict[str, object] = {"command": " ".join(sys.argv), "model": args.model, "facts": len(CHANGES),
                              "as_of": AS_OF.isoformat(), "editing": editing_overrides(args.editing)}

    for mode in ("truthy", "statements"):
        settings = settings_for(args.work, kb, mode, args)
        (args.work / f"{mode}.db").unlink(missing_ok=True)
        store_db.upgrade(settings.database_url)
        db = store_db.open_database(settings.database_url)
        t0 = time.perf_counter()
        report = diff_from_settings(settings, db, settings.state.dir, run_id=f"bench-{mode}", loaded=loaded,
                                    relations=RELATIONS)
        db.dispose()
        out[f"diff_{mode}"] = {"read": report.read, "agree": report.agree, "stale_answers": report.stale_answers,
                               "seconds": round(time.perf_counter() - t0, 1),
                               **queued_current(queued(settings), truth)}
        print(mode, json.dumps(out[f"diff_{mode}"]), flush=True)
    if args.no_apply:
        return _finish(out, args)

    settings = settings_for(args.work, kb, "statements", args)
    db = store_db.open_database(settings.database_url)
    t0 = time.perf_counter()
    writer = model_writer(settings, db, settings.state.dir, run_id="bench-apply", worker="bench")
    report = apply_pending(writer, batch_size=args.batch_size, max_edits=args.max_edits)
    out["apply"] = {"seconds": round(time.perf_counter() - t0, 1), "applied": report.applied,
                    "batches": Counter(b.state for b in report.batches)}
    edited = current_model(settings, db, settings.state.dir)
    db.dispose()
    out["apply"]["verified"] = report.applied
    out["apply"]["failed"] = report.failed
    out["apply"]["seconds_per_verified_edit"] = round(out["apply"]["seconds"] / max(1, report.applied), 1)
    out["apply"]["saturated"] = report.saturated or None
    out["apply"]["batch_rule_would_verify_although_own_check_failed"] = batch_rule_count(settings, report)
    with store_db.open_database(settings.database_url).session() as s:
        version = s.scalars(select(GateFigures).where(GateFigures.scope == "version").order_by(GateFigures.id.desc())
                            ).first() or s.scalars(select(GateFigures).where(GateFigures.passed)
                                                   .order_by(GateFigures.id.desc())).first()
        base = s.scalars(select(GateFigures).where(GateFigures.scope == "base")).first()
        out["known_acc"] = {"base": base.known_acc if base else None, "after": version.known_acc if version else None,
                            "n_known": base.n_known if base else None,
                            "sources": (base.details or {}).get("known_sources") if base else None}
    rows = [r for r in queued(settings) if r.state != "pending"]  # the edits this run applied or failed
    per_subject = Counter(r.subject for r in rows)
    prompts = [fill(r.prompt, r.subject_label) for r in rows]
    paraphrases = [(i, fill(t, r.subject_label)) for i, r in enumerate(rows) for t in r.paraphrases]
    answers = greedy_answers(edited.model, edited.tokenizer, prompts + [p for _, p in paraphrases])
    prompt_ok = [answer_matches(a, rows[i].acceptable) is not None for i, a in enumerate(answers[: len(rows)])]
    para_ok = [(i, answer_matches(a, rows[i].acceptable) is not None)
               for (i, _), a in zip(paraphrases, answers[len(rows):], strict=True)]

    def accuracy(keep) -> dict[str, object]:  # type: ignore[no-untyped-def]
        eff = [ok for i, ok in enumerate(prompt_ok) if keep(i)]
        par = [ok for i, ok in para_ok if keep(i)]
        return {"edits": len(eff), "efficacy_acc": round(sum(eff) / len(eff), 3) if eff else None,
                "paraphrase_acc": round(sum(par) / len(par), 3) if par else None}

    out["after_apply"] = {
        "all": accuracy(lambda i: True),
        "same_subject": accuracy(lambda i: per_subject[rows[i].subject] > 1),
        "other": accuracy(lambda i: per_subject[rows[i].subject] == 1),
        "states": Counter(r.state for r in rows),
    }
    verified = [r for r in rows if r.state == "verified"]
    held = [(r, fill(t, r.subject_label)) for r in rows for t in HELD_OUT.get(r.relation, [])]
    held_answers = greedy_answers(edited.model, edited.tokenizer, [p for _, p in held]) if held else []
    held_ok = [(r, answer_matches(a, r.acceptable) is not None) for (r, _), a in zip(held, held_answers, strict=True)]
    questions = {rel.id: rel.question for rel in open_catalogue(settings).select(RELATIONS)}
    # a held-out phrasing whose question is the catalogue's own (apply trains on that) is held out no more
    own = [question(p) == fill(questions[r.relation], r.subject_label) for r, p in held]
    out["held_out_phrasings"] = {
        "all_queued": share([ok for _, ok in held_ok]),
        "verified_only": share([ok for r, ok in held_ok if r.state == "verified"]),
        "verified_only_without_catalogue_question": share([ok for (r, ok), o in zip(held_ok, own, strict=True)
                                                           if r.state == "verified" and not o]),
        "trained_paraphrases_verified_only": accuracy(lambda i: rows[i].state == "verified")["paraphrase_acc"],
        "n_prompts": len(held_ok)}
    if getattr(edited.tokenizer, "chat_template", None):  # HELD_OUT's questions asked in the chat template
        asked = [(r, chat(edited.tokenizer, question(p)), o) for (r, p), o in zip(held, own, strict=True) if question(p)]
        said = greedy_answers(edited.model, edited.tokenizer, [q for _, q, _ in asked], max_new_tokens=24)
        named = [(r, names_in_sentence(a, r.acceptable) is not None, o) for (r, _, o), a in zip(asked, said, strict=True)]
        out["held_out_chat_questions"] = {
            "all_queued": share([ok for _, ok, _ in named]),
            "verified_only": share([ok for r, ok, _ in named if r.state == "verified"]),
            "verified_only_without_catalogue_question": share([ok for r, ok, o in named
                                                               if r.state == "verified" and not o]),
            "n_prompts": len(named)}
    held_by_request: dict[int, list[bool]] = {}
    for r, ok in held_ok:
        held_by_request.setdefault(r.id, []).append(ok)
    out["held_out_checks"] = held_out_checks(settings, verified, held_by_request)
    wrong = [r.id for r in verified if not prompt_ok[rows.index(r)]]
    out["verified_whose_prompt_answer_is_wrong_now"] = wrong   # per-edit truth: must be []
    if args.compact:
        out["compaction"] = compaction(settings)
    _finish(out, args)


def compaction(settings: Settings) -> dict[str, object]:
    """`kbsync compact` on the applied log: the edits that hold before and after (each on its own
    checks), and the regression gate's figures of the log it replaces and of the compacted model."""
    db = store_db.open_database(settings.database_url)
    writer = model_writer(settings, db, settings.state.dir, run_id="bench-compact", worker="bench")
    t0 = time.perf_counter()
    report = compact(writer)
    with db.session() as s:
        mine = s.scalars(select(GateFigures).where(GateFigures.batch_id == report.batch_id)).first()
        last = s.scalars(select(GateFigures).where(GateFigures.passed, GateFigures.id < (mine.id if mine else 1 << 62))
                         .order_by(GateFigures.id.desc())).first()   # the log it replaces, as last published
        figures = {name: {"known_acc": g.known_acc, "n_known": g.n_known, "perplexity": g.perplexity,
                          "retention": g.retention} for name, g in (("log", last), ("compacted", mine)) if g}
    db.dispose()
    return {"ok": report.ok, "reason": report.reason, "edits": report.n_edits, "batches_replaced": len(report.replaced),
            "holding_before": report.efficacy_before, "holding_after": report.efficacy_after,
            "gate": figures, "seconds": round(time.perf_counter() - t0, 1)}


def held_out_checks(settings: Settings, verified: list[EditRequestRow], held: dict[int, list[bool]]
                    ) -> dict[str, object]:
    """The verified edits' own held-out checks (held_out_acc, their last answer to each form of the
    catalogue question not trained on), by form; how many edits a [verify] min_held_out_acc of 0.5
    or 1 would have left verified; and whether passing them goes with naming the holder on the
    benchmark's HELD_OUT phrasings (`held`: request -> its HELD_OUT answers named the holder)."""
    last: dict[tuple[int, str], bool] = {}
    with store_db.open_database(settings.database_url).session() as s:
        for c in s.scalars(select(EditCheck).where(EditCheck.kind == "held_out_acc",
                                                   EditCheck.request_id.in_([r.id for r in verified]))
                           .order_by(EditCheck.id)):
            last[c.request_id, c.prompt] = c.passed
    forms: dict[str, list[bool]] = {"plain": [], "chat": []}
    mine: dict[int, list[bool]] = {}
    for (rid, prompt), ok in last.items():
        forms["plain" if prompt.endswith(PLAIN_ANSWER) else "chat"].append(ok)
        mine.setdefault(rid, []).append(ok)
    own = {rid: sum(oks) / len(oks) for rid, oks in mine.items()}
    return {"by_form": {form: share(oks) for form, oks in forms.items()},
            "verified_with_min_held_out_acc": {str(t): sum(v >= t for v in own.values()) for t in (0.5, 1.0)},
            "held_out_phrasings_of_those_passing_all": share([ok for rid, v in own.items() if v >= 1.0
                                                              for ok in held.get(rid, [])]),
            "held_out_phrasings_of_the_others": share([ok for rid, v in own.items() if v < 1.0
                                                       for ok in held.get(rid, [])]),
            "n_verified_checked": len(own)}


def share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def batch_rule_count(settings: Settings, report) -> int:  # type: ignore[no-untyped-def]
    """Edits a batch-level rule would have marked verified although their own checks failed."""
    db = store_db.open_database(settings.database_url)
    with db.session() as s:
        n = sum(batch_rule_would_verify(settings.verify, batch.metrics) for outcome in report.batches
                if (batch := s.get(Batch, outcome.batch_id)) is not None)
    db.dispose()
    return n


def _finish(out: dict[str, object], args: argparse.Namespace) -> None:
    text = json.dumps(out, indent=2, default=dict)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
