"""Write kbsync/data/known-facts.json: the facts the regression gate tops its known-fact sample up
with when a KB offers too few the model knows (issue 24).

Source: known_1000.json from ROME (Meng et al., "Locating and Editing Factual Associations in
GPT", NeurIPS 2022), MIT licence, as copied in ../shared/data beside the checkout (its
SOURCES.md). Each record keeps its subject, Wikidata relation id, prompt and answer. Which of
them a model knows is measured on that model (its greedy answers) when the gate first needs them.

Example: python scripts/make_known_facts.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "known_1000.json"
OUT = ROOT / "kbsync" / "data" / "known-facts.json"


def main() -> None:
    records = json.loads(SOURCE.read_text(encoding="utf-8"))
    facts = [{"subject": r["subject"], "relation": r["relation_id"], "prompt": r["prompt"], "answer": r["attribute"]}
             for r in records if r.get("prompt") and r.get("attribute") and r["subject"] in r["prompt"]]
    OUT.write_text(json.dumps({
        "source": "known_1000.json of ROME (Meng et al., NeurIPS 2022), MIT licence; scripts/make_known_facts.py",
        "facts": facts}, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(facts)} facts to {OUT}")


if __name__ == "__main__":
    main()
