"""Which phrasings an edit is trained on decide which phrasings it is said in (issue 24).

The edits: every real change of benchmarks/real_changes_kb.py (the holder current on
2025-06-01 as the new value, as `kbsync diff` queues them), in one MEMIT batch from the base
model, with the configured hyper-parameters and key statistics, once per training variant:

    catalogue   the shipped catalogue's prompt and paraphrases (what `kbsync apply` trains on)
    questions   + the relation's question in the catalogue's words (QUESTIONS below, not yet a
                catalogue field: "Who is the head of government of {}? The answer is")
    titles      + the subject's office title, as the KB gives it (P1313 "office held by head of
                government", P1906 "office held by head of state"): "The Prime Minister of
                Canada is", "The current Prime Minister of Canada,"
    chat        + the question asked in the model's chat template (instruct models only)
    written     + the paraphrases the model wrote itself and a filter kept (--written FILE, from
                benchmarks/model_paraphrases.py)

and combinations joined with "+" (e.g. questions+titles). After each batch, greedy answers
(8 tokens, 24 in chat) are matched as `kbsync diff` matches them against the holder's label
and aliases, on:

    prompt      the catalogue prompt (trained in every variant)
    trained     the catalogue paraphrases (trained in every variant)
    held_out    benchmarks/real_changes_kb.py HELD_OUT: phrasings written for the benchmark and
                never trained on; also without "The prime minister/president of {} is" (P6/P35
                first phrasing), which an office title makes nearly identical to a trained row
    chat_held   HELD_OUT's questions asked in the chat template (the answer names the holder
                anywhere in its first sentence)

Beside them, the share of known facts still answered right (`known`: up to --known of the facts
kbsync ships, kbsync/data/known-facts.json, that the base model answers right), so that a setting
which generalises further can be weighed against what it breaks. `--editing KEY=VALUE` (repeatable)
sets an [editing] setting for every variant, e.g. `--editing early_stop_prob=0.99 --editing v_steps=40`
(target strength) or `--editing layers=[2,3,4,5,6]`; the values are read as JSON where they parse.

Prints a JSON object (one entry per variant) and writes it with --json.

Example (CPU, 2 cores; the recorded run shared them with another job, load about 4, 6-16 minutes
a variant, so its edit_s are no speed figures):
    nice -n 5 .venv/bin/python benchmarks/heldout_phrasings.py --work /tmp/heldout \
        --variants catalogue,questions,titles,questions+titles --json docs/bench/heldout_phrasings.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_changes_kb import ALIASES, CHANGES, HELD_OUT, OFFICE_OF, OFFICE_TITLES, current  # noqa: E402

from kbsync.config import Settings  # noqa: E402
from kbsync.editing.configured import corpus_for, hyper_parameters, load_configured_model  # noqa: E402
from kbsync.editing.covariance import second_moments  # noqa: E402
from kbsync.editing.memit import compute_delta  # noqa: E402
from kbsync.editing.request import EditRequest  # noqa: E402
from kbsync.model.probe import answer_matches, names_in_sentence  # noqa: E402
from kbsync.model.scoring import greedy_answers  # noqa: E402
from kbsync.prompts import fill  # noqa: E402
from kbsync.sources.catalogue import load_catalogue  # noqa: E402
from kbsync.verification.known import answered_right, known_to, shipped  # noqa: E402

TITLE_PHRASINGS = ["The {} is", "The current {},"]   # {} is the office title, the subject's own
# the first HELD_OUT phrasing of P6/P35 ("The prime minister of {} is") is a title phrasing in lower case
NEAR_TITLE = {("P6", 0), ("P35", 0)}
# Questions in the catalogue's own words (not HELD_OUT's), asked in plain text ("... The answer is")
# or in the chat template
QUESTIONS = {
    "P6": "Who is the head of government of {}?", "P35": "Who is the head of state of {}?",
    "P54": "Which team does {} play for?", "P169": "Who is the CEO of {}?",
    "P286": "Who is the head coach of {}?", "P488": "Who is the chairperson of {}?",
    "P1037": "Who is the director of {}?", "P1308": "Who is the current {}?",
}


def question(text: str) -> str:
    """A HELD_OUT phrasing's question, for the chat template ("Who coaches X? It is" -> "Who coaches X?")."""
    return text.split("?")[0] + "?" if "?" in text else ""


def chat(tokenizer, text: str) -> str:  # type: ignore[no-untyped-def]
    return str(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True))


def edits(variant: set[str], catalogue, tokenizer,  # type: ignore[no-untyped-def]
          written: dict[tuple[str, str], list[str]] | None = None) -> list[tuple[EditRequest, str, list[str]]]:
    """(request, relation, acceptable labels) for every change, trained on the variant's phrasings.
    A phrasing must hold the subject (MEMIT reads the key at its last token): an office title without
    it (Taoiseach, pope) adds nothing."""
    out = []
    for i, (relation, subject, holders, _) in enumerate(CHANGES):
        rel = catalogue[relation]
        holder = current(holders)[0]
        paraphrases = list(rel.paraphrases)
        if "questions" in variant:
            paraphrases.append(fill(QUESTIONS[relation], subject) + " The answer is")
        title = OFFICE_TITLES.get(OFFICE_OF.get(relation, ""), {}).get(subject, "")
        if "titles" in variant and subject in title:
            paraphrases += [fill(t, title) for t in TITLE_PHRASINGS]
        if "chat" in variant and getattr(tokenizer, "chat_template", None):
            paraphrases.append(chat(tokenizer, fill(QUESTIONS[relation], subject)))
        if "written" in variant:
            paraphrases += (written or {}).get((relation, subject), [])
        out.append((EditRequest(rel.prompt, subject, holder, request_id=i, paraphrases=tuple(paraphrases)),
                    relation, [holder, *ALIASES.get(holder, [])]))
    return out


def share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def editing_overrides(pairs: list[str]) -> dict[str, object]:
    """--editing KEY=VALUE pairs as an [editing] table; a value is JSON where it parses (numbers, lists)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--editing {pair!r}: write KEY=VALUE, e.g. --editing early_stop_prob=0.99")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def measure(loaded, catalogue, cases, known) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Greedy accuracies of the model as it is now over the cases' prompt, trained paraphrases,
    held-out phrasings (by relation too), held-out questions in the chat template and the known facts."""
    model, tok = loaded.model, loaded.tokenizer
    prompt = [(r, lab, r.text) for r, _, lab in cases]
    trained = [(r, lab, fill(p, r.subject)) for r, rel, lab in cases for p in catalogue[rel].paraphrases]
    held = [(rel, k, lab, fill(t, r.subject)) for r, rel, lab in cases for k, t in enumerate(HELD_OUT[rel])]

    def hits(rows: list[tuple], max_new_tokens: int = 8) -> list[bool]:
        answers = greedy_answers(model, tok, [row[-1] for row in rows], max_new_tokens=max_new_tokens)
        return [answer_matches(a, row[-2]) is not None for row, a in zip(rows, answers, strict=True)]

    held_ok = hits(held)
    out: dict[str, object] = {
        "prompt": share(hits(prompt)), "trained": share(hits(trained)), "held_out": share(held_ok),
        "held_out_without_near_title": share([ok for (rel, k, *_), ok in zip(held, held_ok, strict=True)
                                              if (rel, k) not in NEAR_TITLE]),
        "held_out_by_relation": {rel: share([ok for (r, *_), ok in zip(held, held_ok, strict=True) if r == rel])
                                 for rel in HELD_OUT},
        "n_held_out": len(held), "known": share(answered_right(model, tok, known)), "n_known": len(known)}
    if getattr(tok, "chat_template", None):
        asked = [(lab, chat(tok, question(fill(t, r.subject)))) for r, rel, lab in cases
                 for t in HELD_OUT[rel] if question(t)]
        answers = greedy_answers(model, tok, [q for _, q in asked], max_new_tokens=24)
        out["chat_held"] = share([names_in_sentence(a, lab) is not None for (lab, _), a in zip(asked, answers, strict=True)])
        out["n_chat_held"] = len(asked)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="state directory (model cache, key statistics)")
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--variants", default="catalogue,questions,titles,questions+titles,chat")
    parser.add_argument("--editing", action="append", default=[], metavar="KEY=VALUE",
                        help="an [editing] setting for every variant (repeatable; values read as JSON)")
    parser.add_argument("--written", type=Path, default=None,
                        help="benchmarks/model_paraphrases.py's JSON: the paraphrases variant `written` adds")
    parser.add_argument("--known", type=int, default=100, help="known facts probed for damage (0: none)")
    parser.add_argument("--limit", type=int, default=None, help="the first N changes only (a smoke run)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    written = ({(c["relation"], c["subject"]): c["kept"] for c in json.loads(args.written.read_text())["changes"]}
               if args.written else None)
    if "written" in args.variants and written is None:
        raise SystemExit("variant `written` needs --written FILE (benchmarks/model_paraphrases.py --json FILE)")
    editing = editing_overrides(args.editing)
    settings = Settings.model_validate({"state": {"dir": str(args.work)}, "model": {"path": args.model, "device": "cpu"},
                                        "editing": editing})
    t0 = time.perf_counter()
    loaded = load_configured_model(settings, args.work)
    hp = hyper_parameters(settings, loaded)
    moments = second_moments(loaded, loaded.tokenizer, loaded.adapter, list(hp.layers),
                             corpus_for(settings.editing.corpus, loaded), hp.cov_samples,
                             args.work / "cache" / "stats", model_identity=loaded.identity)
    catalogue = load_catalogue()
    base_cases = edits(set(), catalogue, loaded.tokenizer)[:args.limit]
    known = known_to(loaded.model, loaded.tokenizer, shipped({subject for _, subject, _, _ in CHANGES}), args.known)
    out: dict[str, object] = {"command": " ".join(sys.argv), "model": args.model, "n_edits": len(base_cases),
                              "editing": editing, "hyper_parameters": str(hp),
                              "setup_s": round(time.perf_counter() - t0, 1),
                              "base": measure(loaded, catalogue, base_cases, known), "variants": {}}
    print(json.dumps(out["base"]), file=sys.stderr, flush=True)
    for name in args.variants.split(","):
        variant = set(name.split("+")) - {"catalogue"}
        cases = edits(variant, catalogue, loaded.tokenizer, written)[:args.limit]
        t1 = time.perf_counter()
        delta = compute_delta(loaded, loaded.tokenizer, loaded.adapter, [r for r, _, _ in cases], hp, moments)
        applied = delta.apply(loaded.model, loaded.adapter)
        try:
            row = {"edit_s": round(time.perf_counter() - t1, 1),
                   "phrasings_per_edit": round(sum(1 + len(r.paraphrase_texts) for r, _, _ in cases) / len(cases), 2),
                   **measure(loaded, catalogue, cases, known)}
        finally:
            applied.revert()
        out["variants"][name] = row  # type: ignore[index]
        print(name, json.dumps(row), file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
