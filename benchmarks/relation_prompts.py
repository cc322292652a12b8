"""How well the bundled model answers the catalogue prompts of the relations that change.

For each relation of benchmarks/real_changes_kb.py (real changes, as of 2025-06-01) and each of
its templates (the catalogue prompt, then its paraphrases), the greedy answer (8 tokens,
first clause, kbsync.model.probe) is matched against the labels and aliases of the fact's
holders, as `kbsync diff` matches answers:

- current   share of facts whose answer names the holder current on 2025-06-01
- known     share naming any holder, current or former (the model knows the fact at some
            time: SmolLM2 was trained on text from before most of these changes)
- same      over the facts the prompt answers with a holder, the share of paraphrase answers
            naming the same holder (does a paraphrase give the same answer?)

Example (CPU, about two minutes):
    nice -n 5 .venv/bin/python benchmarks/relation_prompts.py --state-dir .state/bench
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_changes_kb import ALIASES, CHANGES, current  # noqa: E402

from kbsync.model.loading import load_model  # noqa: E402
from kbsync.model.probe import answer_matches, first_clause  # noqa: E402
from kbsync.model.scoring import greedy_answers  # noqa: E402
from kbsync.sources.catalogue import load_catalogue  # noqa: E402

# Templates tried besides the shipped ones (--candidates): rows marked "candidate".
CANDIDATES = {  # the first prompts written, before "The name of ..." measured better
    "P6": ["The head of government of {} is", "The prime minister of {} is"],
    "P35": ["The head of state of {} is", "The president of {} is"],
    "P54": ["{} is a player of", "{} plays football for"],
    "P169": ["The chief executive officer of {} is", "The CEO of {} is"],
    "P286": ["The head coach of {} is", "The manager of {} is"],
    "P488": ["The chairperson of {} is", "The chairman of {} is"],
    "P1037": ["The director of {} is", "The head of {} is"],
    "P1308": ["The {} is", "The current {} is"],
}


def labels(holder: str) -> list[str]:
    return [holder, *ALIASES.get(holder, [])]


def named(answer: str, holders: list[str]) -> str | None:
    """The holder whose label or alias the answer names (the longest match), or None."""
    best: tuple[int, str] | None = None
    for h in holders:
        hit = answer_matches(answer, labels(h))
        if hit and (best is None or len(hit) > best[0]):
            best = (len(hit), h)
    return None if best is None else best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--state-dir", type=Path, default=Path(".state/bench"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--candidates", action="store_true", help="also measure the CANDIDATES templates")
    parser.add_argument("--show", action="store_true", help="print every answer")
    args = parser.parse_args()

    catalogue = load_catalogue()
    loaded = load_model(args.model, state_dir=args.state_dir, device=args.device)
    by_relation = defaultdict(list)
    for relation, subject, holders, _ in CHANGES:
        by_relation[relation].append((subject, holders))

    print("| relation | facts | template | current | known | same |")
    print("|---|---|---|---|---|---|")
    for relation in sorted(by_relation, key=lambda r: int(r[1:])):
        rel = catalogue[relation]
        facts = by_relation[relation]
        shipped = [rel.prompt, *rel.paraphrases]
        templates = shipped + (CANDIDATES.get(relation, []) if args.candidates else [])
        prompts = [t.replace("{}", subject) for t in templates for subject, _ in facts]
        texts = greedy_answers(loaded.model, loaded.tokenizer, prompts, args.max_new_tokens)
        answers = [[first_clause(texts[t * len(facts) + i]) for i in range(len(facts))] for t in range(len(templates))]
        hits = [[named(answers[t][i], sorted({h for h, _, _ in holders})) for i, (_, holders) in enumerate(facts)]
                for t in range(len(templates))]
        if args.show:
            for t, template in enumerate(templates):
                for i, (subject, _) in enumerate(facts):
                    print(f"# {template.replace('{}', subject)!r} -> {answers[t][i]!r}", file=sys.stderr)
        for t, template in enumerate(templates):
            cur = sum(hits[t][i] in current(holders) for i, (_, holders) in enumerate(facts))
            known = sum(h is not None for h in hits[t])
            same = ""
            if t == 0:
                answered = [i for i in range(len(facts)) if hits[0][i] is not None]
                pairs = [(i, p) for i in answered for p in range(1, len(shipped))]
                agree = sum(hits[p][i] == hits[0][i] for i, p in pairs)
                same = f"{agree}/{len(pairs)}" if pairs else "-"
            kind = "" if t < len(shipped) else " (candidate)"
            print(f"| {relation} {rel.label if t == 0 else ''} | {len(facts) if t == 0 else ''} | `{template}`{kind} "
                  f"| {cur}/{len(facts)} | {known}/{len(facts)} | {same} |", flush=True)


if __name__ == "__main__":
    main()
