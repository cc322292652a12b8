"""`kbsync follow`: follow Wikidata's change stream; probe and queue what changed."""

from __future__ import annotations

import json
import time

import click

from kbsync.cli.cmd_diff import record_failure
from kbsync.cli.main import cli
from kbsync.runtime import App


@cli.command()
@click.option("--until-caught-up", is_flag=True,
              help="Read the stream until it has no more events, probe and queue what changed, then exit "
                   "(for cron and tests); without it, follow until interrupted.")
@click.option("--snapshot-only", is_flag=True, help="Record what changed in the snapshot; probe and queue nothing.")
@click.option("--max-events", type=click.IntRange(min=1), default=None,
              help="Stop reading the stream after this many events (the rest is read next time).")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
@click.pass_obj
def follow(app: App, until_caught_up: bool, snapshot_only: bool, max_events: int | None, as_json: bool) -> None:
    """Follow Wikidata's EventStreams ([kb] source = "wikidata"): fetch the watched items that
    changed, probe the model on them and queue the disagreements, as kbsync diff does.

    Example: kbsync follow --until-caught-up
    """
    from kbsync.sync.from_settings import (
        follow_from_settings,  # the model stack: only when following
    )

    db = app.database()
    while True:
        try:
            report = follow_from_settings(app.settings, db, app.state_dir, run_id=app.run_id,
                                          snapshot_only=snapshot_only, max_events=max_events)
        except Exception as exc:
            record_failure(app, "follow", exc)
            raise
        d = report.diff
        if as_json:
            click.echo(json.dumps(report.as_dict()))
        else:
            click.echo(f"read {report.events} events ({report.wikidata} item edits on wikidatawiki, "
                       f"{report.watched} of watched items, {report.newer} new revisions"
                       + (f", {report.backfilled} items from RecentChanges after a gap" if report.backfilled else "")
                       + f"); fetched {report.fetched} items: {d['read']} facts ({d['new']} new, {d['changed']} "
                       f"changed), probed {d['probed']}, queued {d['queued']}, superseded {d['superseded']}"
                       + (f"; {d['review']} now 'no value': review them (kbsync audit)" if d["review"] else ""))
        if until_caught_up or max_events is not None:
            return
        time.sleep(app.settings.kb.stream_idle_s)
