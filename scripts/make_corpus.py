"""Write text the bundled model samples itself (kbsync's offline corpus) to a file.

`[editing] corpus = "model-samples"` samples this text on every fresh state directory, which
takes minutes on a CPU. The demo and the tests read a copy made once by this script instead
(`builtin:smollm2-samples`, kbsync/data/smollm2-samples.txt): the same distribution, the
same seed, no sampling at run time.

The regression gate's held-out text (`[gate] corpus = "auto"` beside `builtin:smollm2-samples`)
is the same kind of text from another seed, never read for the key statistics:
    .venv/bin/python scripts/make_corpus.py --n 16 --seed 1 --batch-size 16 --out kbsync/data/smollm2-heldout.txt

Example:
    .venv/bin/python scripts/make_corpus.py --n 512 --out kbsync/data/smollm2-samples.txt
    .venv/bin/python scripts/make_corpus.py --n 512 --model builtin:gemma3-270m --batch-size 64 \
        --out kbsync/data/gemma3-samples.txt
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

from kbsync.editing.covariance import ModelSampleCorpus
from kbsync.model.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="texts to sample")
    parser.add_argument("--out", type=Path, default=Path("kbsync/data/smollm2-samples.txt"))
    parser.add_argument("--state-dir", type=Path, default=Path(".kbsync"))
    parser.add_argument("--model", default="builtin:smollm2-135m", help="[model] path")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (the key statistics use 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts sampled together")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lm = load_model(args.model, state_dir=args.state_dir, device="cpu")
    corpus = ModelSampleCorpus(lm.model, lm.tokenizer, seed=args.seed, n_tokens=64, batch_size=args.batch_size)
    texts: list[str] = []
    t0 = time.perf_counter()
    for text in itertools.islice(corpus.texts(), args.n):  # batched sampling: a line per batch
        texts.append(" ".join(text.split()))
        if len(texts) % args.batch_size == 0 or len(texts) == args.n:
            rate = len(texts) / (time.perf_counter() - t0)
            print(f"\rsampled {len(texts)}/{args.n} texts ({rate:.1f} texts/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    args.out.write_text("\n".join(t for t in texts if t) + "\n", encoding="utf-8")
    print(f"wrote {len(texts)} texts to {args.out}")


if __name__ == "__main__":
    main()
