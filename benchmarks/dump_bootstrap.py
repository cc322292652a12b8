"""`kbsync bootstrap --dump` on a Wikidata-shaped JSON dump (issue 28): time and peak RSS.

    python benchmarks/dump_bootstrap.py --facts 1000000 [--entities 1000000] [--work DIR] [--json OUT]

The dump holds the facts of ``diff_scale.py``'s KB of the same size, as entity JSON (each
subject an item with P6 and P36 statements, normal rank, a P580 start; the values items with a
label), plus items without a synced relation up to ``--entities`` (a real dump is mostly items
a sync does not watch): one entity a line in the dump's ``[`` / ``,`` framing, gzipped. Then, in
its own process (peak RSS from ``os.wait4``, as diff_scale.py measures): ``kbsync db upgrade``
and ``kbsync bootstrap --dump FILE --json`` into a fresh SQLite database: the snapshot only, no
model. Compare with diff_scale.py's "first (--snapshot-only)" row at the same number of facts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

from diff_scale import RELATIONS, kbsync

CAL = "http://www.wikidata.org/entity/Q1985727"


def claim(subject: str, prop: str, value: int, n: int) -> dict[str, object]:
    return {"mainsnak": {"snaktype": "value", "property": prop, "datatype": "wikibase-item",
                         "datavalue": {"value": {"entity-type": "item", "numeric-id": value, "id": f"Q{value}"},
                                       "type": "wikibase-entityid"}},
            "type": "statement", "id": f"{subject}$s{n}-a", "rank": "normal",
            "qualifiers": {"P580": [{"snaktype": "value", "property": "P580", "datatype": "time",
                                     "datavalue": {"value": {"time": "+2020-01-01T00:00:00Z", "timezone": 0,
                                                             "before": 0, "after": 0, "precision": 11,
                                                             "calendarmodel": CAL}, "type": "time"}}]},
            "qualifiers-order": ["P580"], "references": []}


def item(eid: str, label: str, claims: dict[str, list[object]], revision: int) -> str:
    return json.dumps({"type": "item", "id": eid, "labels": {"en": {"language": "en", "value": label}},
                       "descriptions": {"en": {"language": "en", "value": "an item of the benchmark dump"}},
                       "aliases": {}, "claims": claims, "sitelinks": {}, "lastrevid": revision,
                       "modified": "2024-01-01T00:00:00Z"}, separators=(",", ":"))


def write_dump(path: Path, facts: int, entities: int) -> int:
    """diff_scale.write_kb's facts as entity JSON (same ids, labels, values), then filler items."""
    m = max(1000, facts // 100)
    lines = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        f.write("[\n")

        def put(text: str) -> None:
            nonlocal lines
            f.write(("" if lines == 0 else ",\n") + text)
            lines += 1

        for j in range(m):
            put(item(f"Q8{j:09d}", f"Place {j}", {}, 1_000_000 + j))
        for s in range((facts + 1) // 2):
            eid, claims = f"Q9{s:09d}", {}
            for r, relation in enumerate(RELATIONS):
                i = 2 * s + r
                if i < facts:
                    claims[relation] = [claim(eid, relation, int(f"8{(i * 2654435761) % m:09d}"), i)]
            put(item(eid, f"Entity {s}", claims, 2_000_000 + s))
        for k in range(max(0, entities - lines)):
            put(item(f"Q7{k:09d}", f"Thing {k}", {"P31": [claim(f"Q7{k:09d}", "P31", 5, k)]}, 3_000_000 + k))
        f.write("\n]\n")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=1_000_000, help="entities in the dump in all")
    parser.add_argument("--work", type=Path, default=Path(".bench-dump"))
    parser.add_argument("--json", type=Path, help="write the row as JSON here too")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    dump = args.work / f"dump-{args.facts}-{args.entities}.json.gz"
    if not dump.exists():
        t0 = time.perf_counter()
        count = write_dump(dump.with_suffix(".tmp"), args.facts, args.entities)
        dump.with_suffix(".tmp").rename(dump)
        print(f"wrote {dump} ({count:,} entities, {dump.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    state = args.work / f"state-{int(time.time())}"
    state.mkdir()
    env = {**os.environ, "KBSYNC_STATE__DIR": str(state), "KBSYNC_DATABASE__URL": f"sqlite:///{state / 'kbsync.db'}",
           "KBSYNC_RELATIONS__ENABLED": str(list(RELATIONS)), "KBSYNC_LOGGING__LEVEL": "warning",
           "KBSYNC_KB__SOURCE": "wikidata", "KBSYNC_KB__AS_OF": "2026-01-01"}
    kbsync(["db", "upgrade"], env, state / "upgrade")
    load_before = os.getloadavg()[0]
    seconds, rss, out = kbsync(["bootstrap", "--dump", str(dump), "--json"], env, state / "bootstrap")
    report = json.loads(out)
    d = report["diff"]
    row = {"facts": args.facts, "entities": report["entities"], "watched": report["watched"],
           "dump_mib": round(dump.stat().st_size / 2**20), "seconds": round(seconds, 1), "peak_rss_mb": round(rss),
           "seconds_read": round(d["seconds_read"], 1), "seconds_compare": round(d["seconds_compare"], 1),
           "seconds_write": round(d["seconds_write"], 1), "facts_read": d["read"], "new": d["new"],
           "load_1min_before": round(load_before, 1), "load_1min_after": round(os.getloadavg()[0], 1)}
    print(json.dumps(row), flush=True)
    print(f"\n| entities | watched items | facts | seconds (read / compare / write) | peak RSS MB |\n|---|---|---|---|---|\n"
          f"| {row['entities']:,} | {row['watched']:,} | {row['facts_read']:,} | {row['seconds']} "
          f"({row['seconds_read']} / {row['seconds_compare']} / {row['seconds_write']}) | {row['peak_rss_mb']} |")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
