"""Paraphrases written by the model itself (issue 24): can the model to be edited write the
phrasings its edits should also hold in?

For every real change of benchmarks/real_changes_kb.py, the model continues a few-shot prompt
(three hand-written pairs "Sentence: ... / Same question, other words: ...", then the change's
catalogue prompt) and samples --n candidates (top-k 50, fixed seed, one line of at most 16 tokens).
A candidate is kept when a filter that needs no judge accepts it:

- it names the subject verbatim (MEMIT reads the key at the subject's last token);
- it is not the catalogue prompt or one of its paraphrases (case and spaces aside);
- it is still open: no holder of the change (past or current) in it, no final full stop, at most
  14 words.

Prints, and writes with --json, the candidates and the kept ones per change, the share of changes
with at least one kept, and the kept count. `benchmarks/heldout_phrasings.py --written FILE` trains
on the kept ones (variant `written`) and measures what they buy on phrasings never trained on.

Example (CPU, 1 thread: the 89 changes took 929 s on SmolLM2-135M with other jobs beside it, load about 5):
    .venv/bin/python benchmarks/model_paraphrases.py --work /tmp/heldout --json /tmp/written.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from real_changes_kb import CHANGES  # noqa: E402

from kbsync.config import Settings  # noqa: E402
from kbsync.editing.configured import load_configured_model  # noqa: E402
from kbsync.model.tokens import pad_id_of  # noqa: E402
from kbsync.prompts import fill  # noqa: E402
from kbsync.sources.catalogue import load_catalogue  # noqa: E402

SHOTS = (("The capital of Italy is", "Italy's capital city is"),
         ("The author of Hamlet is", "Hamlet was written by"),
         ("The mother tongue of Marie Curie is", "Marie Curie's native language is"))
MAX_WORDS = 14


def few_shot(sentence: str) -> str:
    shots = "".join(f"Sentence: {a}\nSame question, other words: {b}\n\n" for a, b in SHOTS)
    return shots + f"Sentence: {sentence}\nSame question, other words:"


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def kept(candidate: str, subject: str, trained: list[str], holders: list[str]) -> bool:
    text = candidate.strip()
    return (bool(text) and subject in text and norm(text) not in {norm(t) for t in trained}
            and not any(h.lower() in text.lower() for h in holders)
            and not text.endswith(".") and len(text.split()) <= MAX_WORDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="state directory (model cache)")
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--n", type=int, default=5, help="candidates sampled per change")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings.model_validate({"state": {"dir": str(args.work)}, "model": {"path": args.model, "device": "cpu"}})
    loaded = load_configured_model(settings, args.work)
    model, tok = loaded.model, loaded.tokenizer
    catalogue = load_catalogue()
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    changes = []
    for relation, subject, holders, _ in CHANGES:
        rel = catalogue[relation]
        trained = [fill(p, subject) for p in (rel.prompt, *rel.paraphrases)]
        ids = tok(few_shot(trained[0]), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=16, do_sample=True, top_k=50, num_return_sequences=args.n,
                                 pad_token_id=pad_id_of(tok))
        width = ids["input_ids"].shape[1]
        candidates = [tok.decode(o[width:], skip_special_tokens=True).split("\n")[0].strip() for o in out]
        keep = list(dict.fromkeys(c for c in candidates if kept(c, subject, trained, [h for h, _, _ in holders])))
        changes.append({"relation": relation, "subject": subject, "prompt": trained[0],
                        "candidates": candidates, "kept": keep})
    n_kept = sum(len(c["kept"]) for c in changes)
    out = {"command": " ".join(sys.argv), "model": args.model, "n_changes": len(changes), "n_per_change": args.n,
           "seconds": round(time.perf_counter() - t0, 1), "kept": n_kept,
           "changes_with_one_kept": round(sum(bool(c["kept"]) for c in changes) / len(changes), 3),
           "changes": changes}
    print(json.dumps({k: v for k, v in out.items() if k != "changes"}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
