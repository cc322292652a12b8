"""Facts probed per second on the bundled model (known_1000 prompts, their true attribute as KB).

Example:
    .venv/bin/python benchmarks/probe_speed.py --n 64 --state-dir .state/bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from kbsync.model.loading import load_model
from kbsync.model.probe import ProbeItem, probe

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "known_1000.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="number of known_1000 facts to probe")
    parser.add_argument("--batch-size", type=int, default=None, help="initial batch size (default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--state-dir", type=Path, default=Path(".state/bench"))
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    facts = json.loads(args.data.read_text())[: args.n]
    items = [ProbeItem(f["prompt"], [f["attribute"]]) for f in facts]
    t0 = time.perf_counter()
    loaded = load_model(args.model, state_dir=args.state_dir, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - t0

    probe(loaded.model, loaded.tokenizer, items[:2], args.max_new_tokens)  # warm-up
    t0 = time.perf_counter()
    results = probe(loaded.model, loaded.tokenizer, items, args.max_new_tokens, args.batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    agree = sum(r.agrees for r in results)
    print(json.dumps({
        "facts": len(items), "seconds": round(elapsed, 2), "facts_per_second": round(len(items) / elapsed, 2),
        "agreement": round(agree / len(items), 3), "load_seconds": round(load_s, 1),
        "device": str(loaded.device), "dtype": str(loaded.model.dtype), "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
    }))


if __name__ == "__main__":
    main()
