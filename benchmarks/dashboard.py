"""Response time of every dashboard page on the seeded 100,000-request fixture (not a timed test).

    python benchmarks/dashboard.py                       # builds /tmp/kbsync-dashboard-100k.db once
    python benchmarks/dashboard.py --url postgresql+psycopg://postgres@127.0.0.1:5432/big --build

Each page is fetched over HTTP from the real server (uvicorn in a thread) once to warm up, then
`--repeat` times; the first time, the median and the slowest are printed, against the 300 ms
target for the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dashboard_fixture  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from kbsync.dashboard.app import create_app  # noqa: E402
from kbsync.dashboard.queries import failure_groups  # noqa: E402
from kbsync.dashboard.server import BackgroundServer  # noqa: E402
from kbsync.store import db as store_db  # noqa: E402
from kbsync.store.models import Batch, EditRequestRow, ModelVersion  # noqa: E402

TARGET_MS = 300.0
DEFAULT_DB = Path("/tmp/kbsync-dashboard-100k.db")


def pages(db: store_db.Database, page_size: int) -> dict[str, str]:
    with db.session() as s:
        n_batches = s.scalar(select(func.count()).select_from(Batch)) or 1
        n_versions = s.scalar(select(func.count()).select_from(ModelVersion)) or 1
        middle = s.scalar(select(Batch.id).where(Batch.state == "verified").order_by(Batch.id)
                          .offset(n_batches // 2).limit(1))
        row = s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id == middle)).first()
        assert row is not None, "the fixture has no edits in batches"
        group = failure_groups(s)[0][0]
    return {
        "overview": "/",
        "timeline (newest)": "/timeline",
        "timeline (oldest page)": f"/timeline?page={-(-n_batches // page_size)}",
        "batch": f"/batches/{middle}",
        "fact search by id": f"/facts?q={row.subject}&relation={row.relation}",
        "fact search by label": f"/facts?q={urllib.parse.quote(row.subject_label)}",
        "fact": f"/facts/{row.subject}/{row.relation}",
        "failures": "/failures",
        "failures of one reason": f"/failures?group={urllib.parse.quote(group)}",
        "model versions (newest)": "/versions",
        "model versions (oldest page)": f"/versions?page={-(-n_versions // page_size)}",
    }


def fetch_ms(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url) as r:
        r.read()
        assert r.status == 200, (url, r.status)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"sqlite:///{DEFAULT_DB}", help="database URL (default: %(default)s)")
    parser.add_argument("--build", action="store_true", help="seed the fixture into --url first (an empty database)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--page-size", type=int, default=50)
    args = parser.parse_args()
    if args.build or (args.url == f"sqlite:///{DEFAULT_DB}" and not DEFAULT_DB.exists()):
        t0 = time.perf_counter()
        counts = dashboard_fixture.build(args.url)
        print(f"seeded {counts} in {time.perf_counter() - t0:.0f}s")
    db = store_db.open_database(args.url)
    server = BackgroundServer(create_app(db, page_size=args.page_size), "127.0.0.1:0").start()
    worst = 0.0
    try:
        print(f"{'page':30} {'first ms':>9} {'median ms':>10} {'max ms':>8}  path")
        for name, path in pages(db, args.page_size).items():
            first = fetch_ms(server.url + path)  # compiles the template; renders the charts (then cached)
            times = [fetch_ms(server.url + path) for _ in range(args.repeat)]
            worst = max(worst, statistics.median(times))
            print(f"{name:30} {first:9.1f} {statistics.median(times):10.1f} {max(times):8.1f}  {path}")
    finally:
        server.stop()
        db.dispose()
    print(f"slowest median {worst:.0f} ms: {'within' if worst < TARGET_MS else 'OVER'} the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
