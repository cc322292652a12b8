"""Build kbsync's demo knowledge base (kbsync/data/demo.ttl) from ROME's known_1000.json.

The demo KB is Wikidata-shaped and small on purpose (`make demo` must finish in minutes):
- facts the bundled model (SmolLM2-135M-Instruct) already answers right: chosen by probing
  the model with kbsync's own probe, so `kbsync diff` finds them in agreement;
- facts the KB now states differently: the old value stays as a normal-rank statement that
  ended (pq:P582), a newer preferred-rank statement (pq:P580) gives the new value, and the
  truthy wdt: triple carries only the new value, as Wikidata does;
- one deprecated statement (a wrong value marked deprecated) that every reader must drop.
The changed values are simulated (another object of the same relation from known_1000):
they exist to give `kbsync diff` real work, not to state real-world facts.

Sources: known_1000.json from ROME (Meng et al., "Locating and Editing Factual Associations
in GPT", NeurIPS 2022), MIT licence, as copied in ../shared/data (see its SOURCES.md).
Entity ids are minted by scripts/make_kb.py's scheme (Q900000001 + label number), not
real Wikidata QIDs.

Example:
    .venv/bin/python scripts/make_demo_kb.py --out kbsync/data/demo.ttl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_kb import DEFAULT_SOURCE, HEADER, ID_BASE, literal  # noqa: E402

RELATIONS = ("P36", "P30", "P37", "P17", "P127", "P176")
AGREEING_PER_RELATION = 5
CHANGED_PER_RELATION = 1
ALIASES = {"United States of America": ("USA", "United States"), "United Kingdom": ("UK", "Britain")}


def candidates(records: list[dict]) -> dict[str, list[dict]]:
    by_rel: dict[str, list[dict]] = defaultdict(list)
    seen = set()
    for r in records:
        key = (r["subject"], r["relation_id"])
        if r["relation_id"] in RELATIONS and key not in seen:
            seen.add(key)
            by_rel[r["relation_id"]].append(r)
    return by_rel


def agreeing(by_rel: dict[str, list[dict]], state_dir: Path) -> dict[str, list[dict]]:
    """The facts the bundled model answers right, per relation (probing at most 40 each)."""
    from kbsync.model.loading import load_model
    from kbsync.model.probe import ProbeItem, probe
    from kbsync.sources.catalogue import load_catalogue

    lm = load_model("builtin:smollm2-135m", state_dir=state_dir, device="cpu")
    catalogue = load_catalogue()
    out = {}
    for rel, recs in sorted(by_rel.items()):
        recs = recs[:40]
        items = [ProbeItem(catalogue[rel].prompt_for(r["subject"]), [r["attribute"]]) for r in recs]
        results = probe(lm.model, lm.tokenizer, items, max_new_tokens=6, batch_size=16)
        good = [r for r, res in zip(recs, results, strict=True) if res.agrees and res.matched == r["attribute"]]
        out[rel] = good[: AGREEING_PER_RELATION + CHANGED_PER_RELATION]
        print(f"{rel}: {len(good)}/{len(recs)} answered right; kept {len(out[rel])}", file=sys.stderr)
    return out


def build(chosen: dict[str, list[dict]], all_records: list[dict]) -> tuple[str, list[dict]]:
    labels = sorted({r["subject"] for r in all_records} | {r["attribute"] for r in all_records})
    number = {label: i for i, label in enumerate(labels)}

    def qid(label: str) -> str:
        return f"Q{ID_BASE + number[label]}"

    changes = []
    subjects: dict[str, list[str]] = defaultdict(list)
    statements: list[str] = []
    objects: set[str] = set()
    modified: dict[str, str] = {}
    for rel, recs in sorted(chosen.items()):
        pool = sorted({r["attribute"] for r in all_records if r["relation_id"] == rel})
        for i, r in enumerate(recs):
            s, old = r["subject"], r["attribute"]
            base = f"wds:{qid(s)}-{rel}"
            objects.add(old)
            if i >= len(recs) - CHANGED_PER_RELATION:  # the KB now says something else
                new = pool[(pool.index(old) + 7) % len(pool)]
                objects.add(new)
                changes.append({"subject": s, "relation": rel, "old": old, "new": new, "qid": qid(s)})
                subjects[s] += [f"wdt:{rel} wd:{qid(new)}", f"p:{rel} {base}-old", f"p:{rel} {base}-new"]
                statements.append(
                    f"{base}-old a wikibase:Statement ;\n    ps:{rel} wd:{qid(old)} ;\n"
                    "    wikibase:rank wikibase:NormalRank ;\n"
                    '    pq:P582 "2025-06-30T00:00:00Z"^^xsd:dateTime .\n')
                statements.append(
                    f"{base}-new a wikibase:Statement ;\n    ps:{rel} wd:{qid(new)} ;\n"
                    "    wikibase:rank wikibase:PreferredRank ;\n"
                    '    pq:P580 "2025-07-01T00:00:00Z"^^xsd:dateTime .\n')
                modified[s] = "2025-07-01T00:00:00Z"
            else:
                subjects[s] += [f"wdt:{rel} wd:{qid(old)}", f"p:{rel} {base}-1"]
                statements.append(f"{base}-1 a wikibase:Statement ;\n    ps:{rel} wd:{qid(old)} ;\n"
                                  "    wikibase:rank wikibase:NormalRank .\n")
                if i == 0:  # a wrong value, deprecated: readers must drop it
                    wrong = pool[(pool.index(old) + 3) % len(pool)]
                    objects.add(wrong)
                    subjects[s].append(f"p:{rel} {base}-deprecated")
                    statements.append(f"{base}-deprecated a wikibase:Statement ;\n    ps:{rel} wd:{qid(wrong)} ;\n"
                                      "    wikibase:rank wikibase:DeprecatedRank .\n")
    header = HEADER.format(copies=1, base=ID_BASE, stride=0).replace(
        "generated by scripts/make_kb.py (copies: 1)", "generated by scripts/make_demo_kb.py (the demo KB)")
    out = [header.replace("@prefix ps:", "@prefix pq: <http://www.wikidata.org/prop/qualifier/> .\n@prefix ps:")]
    for label in sorted(set(subjects) | objects):
        lines = [f"wd:{qid(label)} a wikibase:Item", f"rdfs:label {literal(label)}@en"]
        lines += [f"skos:altLabel {literal(a)}@en" for a in ALIASES.get(label, ())]
        lines.append(f'schema:dateModified "{modified.get(label, "2024-01-01T00:00:00Z")}"^^xsd:dateTime')
        lines += subjects.get(label, [])
        out.append(" ;\n    ".join(lines) + " .\n")
    out += statements
    return "".join(out), changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=HERE.parent / "kbsync" / "data" / "demo.ttl")
    parser.add_argument("--state-dir", type=Path, default=HERE.parent / ".kbsync")
    args = parser.parse_args()
    records = json.loads(args.source.read_text(encoding="utf-8"))
    chosen = agreeing(candidates(records), args.state_dir)
    text, changes = build(chosen, records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    for c in changes:
        print(f"changed: {c['subject']} {c['relation']}: {c['old']} -> {c['new']}", file=sys.stderr)


if __name__ == "__main__":
    main()
