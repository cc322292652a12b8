"""Which facts share an edited subject's key: the cosine similarities that choose neighbours at risk.

For one subject of the demo KB (default: Emmanuel Glacier, P30 continent), the subject key at the
bundled model's edited layers (the MLP input at the subject's last token, as MEMIT writes it)
is compared with every other subject of the same relation, as `[verify] at_risk_share` does
(verification/neighbours.py: cosine, mean over the edited layers, on the model before the edit).
Prints one JSON object, candidates most similar first.

Example:
    .venv/bin/python benchmarks/key_similarity.py --subject "Emmanuel Glacier" --relation P30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kbsync.config import Settings
from kbsync.editing.configured import hyper_parameters, load_configured_model
from kbsync.sources.factory import open_catalogue, open_source
from kbsync.verification.neighbours import KeySimilarity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subject", default="Emmanuel Glacier", help="subject label in the demo KB")
    parser.add_argument("--relation", default="P30")
    parser.add_argument("--state-dir", type=Path, default=Path(".state/bench"))
    args = parser.parse_args()

    settings = Settings()   # the embedded defaults: the demo KB
    catalogue = open_catalogue(settings)
    relation = catalogue[args.relation]
    facts = open_source(settings, catalogue).read_all([args.relation])
    labels = sorted({f.subject_label for f in facts})
    if args.subject not in labels:
        raise SystemExit(f"{args.subject!r} has no {args.relation} fact in the demo KB; pick one of {labels}")
    loaded = load_configured_model(settings, args.state_dir)   # the bundled model
    layers = list(hyper_parameters(settings, loaded).layers)
    similarity = KeySimilarity(loaded.model, loaded.tokenizer, loaded.adapter, layers)
    others = [label for label in labels if label != args.subject]
    scores = similarity([(args.subject, relation.prompt_for(args.subject))],
                        [(label, relation.prompt_for(label)) for label in others])
    assert scores is not None, "a subject was not found in its own prompt"
    ranked = sorted(zip(others, scores[0].tolist(), strict=True), key=lambda pair: -pair[1])
    print(json.dumps({"subject": args.subject, "relation": args.relation, "layers": layers,
                      "similarity": {label: round(score, 3) for label, score in ranked}}, indent=1))


if __name__ == "__main__":
    main()
