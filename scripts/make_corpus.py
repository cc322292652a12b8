"""Write text the bundled model samples itself (kbsync's offline corpus) to a file.

`[editing] corpus = "model-samples"` samples this text on every fresh state directory, which
takes minutes on a CPU. The demo and the tests read a copy made once by this script instead
(`builtin:smollm2-samples`, kbsync/data/smollm2-samples.txt): the same distribution and
seed (drawn 32 at a time, not 128: other texts), no sampling at run time.

The regression gate's held-out text (`[gate] corpus = "auto"` beside `builtin:smollm2-samples`)
is the same kind of text from another seed, never read for the key statistics:
    .venv/bin/python scripts/make_corpus.py --n 16 --seed 1 --batch-size 16 --out kbsync/data/smollm2-heldout.txt

Example:
    .venv/bin/python scripts/make_corpus.py --n 512 --batch-size 32 --out kbsync/data/smollm2-samples.txt   # as shipped
    # Gemma 3 270M's, as shipped (builtin:gemma3-samples): 905 s at 0.57 texts/s on one thread, a two-thread
    # benchmark beside it (load 3); its held-out text 49 s
    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_corpus.py --n 512 --model builtin:gemma3-270m \
        --out kbsync/data/gemma3-samples.txt
    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_corpus.py --n 16 --seed 1 --batch-size 16 \
        --model builtin:gemma3-270m --out kbsync/data/gemma3-heldout.txt
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kbsync.editing.covariance import SAMPLE_BATCH, ModelSampleCorpus
from kbsync.model.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="texts to sample")
    parser.add_argument("--out", type=Path, default=Path("kbsync/data/smollm2-samples.txt"))
    parser.add_argument("--state-dir", type=Path, default=Path(".kbsync"))
    parser.add_argument("--model", default="builtin:smollm2-135m", help="[model] path")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (the key statistics use 0)")
    parser.add_argument("--batch-size", type=int, default=SAMPLE_BATCH,
                        help=f"texts sampled together (default {SAMPLE_BATCH}: the fastest on a 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lm = load_model(args.model, state_dir=args.state_dir, device="cpu")
    corpus = ModelSampleCorpus(lm.model, lm.tokenizer, seed=args.seed, n_tokens=64, batch_size=args.batch_size)
    partial = args.out.with_name(args.out.name + ".partial")   # the texts so far, a line each as sampled
    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("texts"),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    t0, written = time.perf_counter(), 0
    with partial.open("w", encoding="utf-8") as f, Progress(*columns, transient=False) as bar:
        task = bar.add_task("sampling", total=args.n, rate="")
        for done, text in enumerate(itertools.islice(corpus.texts(), args.n), start=1):
            line = " ".join(text.split())
            if line:
                f.write(line + "\n")
                written += 1
            if done % args.batch_size == 0 or done == args.n:
                f.flush()
                bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - t0):.2f} texts/s")
    partial.replace(args.out)
    print(f"wrote {written} texts to {args.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
