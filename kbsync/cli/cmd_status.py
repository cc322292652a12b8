"""`kbsync status`."""

from __future__ import annotations

import json

import click

from kbsync.cli.main import cli
from kbsync.daemon.health import read_health
from kbsync.runtime import App
from kbsync.store.status import status as read_status


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keys documented in docs/reference.md).")
@click.pass_obj
def status(app: App, as_json: bool) -> None:
    """Schema version, queue counts by state, current model version, last run.

    Example: kbsync status --json
    """
    from kbsync.editing.stats_cache import ready

    app.read_only = True   # nothing written: works on a mounted backup or a full disk
    health = read_health(app.state_dir)
    if health and not health["healthy"] and not as_json:   # said before the database is asked: it may be out
        click.echo(f"daemon      UNHEALTHY since {health['since']}: {health['reason']} (pid {health['pid']}; it retries "
                   "with back-off and goes on when the database answers)")
    data = read_status(app.database(), gate=app.settings.gate)
    data["daemon_health"] = health
    data["key_statistics"] = ready(app.settings, app.state_dir)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(f"kbsync {data['kbsync_version']}  database {data['database']}")
    click.echo(f"schema      {data['schema']['current']} (head {data['schema']['head']})")
    click.echo(f"kb facts    {data['kb_facts']}")
    for f in data["settling"]:
        click.echo(f"settling    {f['subject']} {f['subject_label']} {f['relation']}: "
                   f"{', '.join((f['objects_new'] or {}).values())} since {f['since']} (held by [kb] settle_s)")
    click.echo("queue       " + "  ".join(f"{k}={v}" for k, v in data["queue"].items()))
    click.echo("batches     " + "  ".join(f"{k}={v}" for k, v in data["batches"].items()))
    v = data["current_model_version"]
    click.echo("model       " + ("base (no edits applied)" if v is None else f"version {v['id']} = base + batches {v['batch_ids']}"))
    k = data["key_statistics"]
    click.echo("statistics  " + (f"cached (layers {k['layers']}, {k['n_samples']} texts of {k['corpus']})" if k["cached"]
                                 else f"not cached for this model, layers and corpus ({k['corpus']}): "
                                      "`kbsync stats` computes them, or the first apply does"))
    g = data["gate"]
    for name in ("base", "current"):
        if g[name] is not None:
            click.echo(f"{'gate ' + name:<11} {_figures(g[name])}")   # "gate current" is 12 wide
    if g["last_refused"] is not None:
        click.echo(f"gate refused batch {g['last_refused']['batch_id']}: {g['last_refused']['reason']}")
    c, h = data["capacity"], data["capacity"]["headroom"]
    click.echo("capacity    " + (f"SATURATED since {c['since']}: {c['reason']}" if c["state"] == "saturated" else "room")
               + f"  ({_headroom(h)})")
    if c["state"] == "saturated":
        click.echo("            the gate refuses new edits for lack of room: `kbsync compact` re-solves the log from the "
                   "base, or widen [gate] bounds, or start from a new base (docs/operations.md)")
    waiting = {k: n for k, n in data["holds"].items() if n}
    if waiting:
        click.echo("holds       " + "  ".join(f"{k}={n}" for k, n in waiting.items())
                   + "  (facts not queued again until what they wait for changes: `kbsync audit --holds`)")
    d = data["damage"]
    if d["flagged_batches"]:
        click.echo("damage      " + "  ".join(f"batch {b}: {n} fact(s)" for b, n in d["flagged_batches"].items())
                   + "  (flagged, not queued: `kbsync audit --damage`, then rollback or `kbsync retry --damage`)")
    o = data["last_database_outage"]
    if o is not None:
        click.echo(f"outage      the daemon could not reach the database from {o['since']} to {o['until']} "
                   f"({o['seconds']:.0f} s, {o['ticks_skipped']} tick(s) skipped): {o['reason']}")
    if data["serving"] is not None:
        click.echo("serving     " + _serving(data["serving"]))
    r = data["last_run"]
    click.echo("last run    " + ("never" if r is None else f"{r['kind']} at {r['at']} ({'ok' if r['ok'] else 'FAILED'})"))


def _serving(serving: dict) -> str:
    """The engine's last reload: ok (and what the served model answered), or FAILED with the fix."""
    last = serving["last"]
    version = "the base" if last["model_version_id"] is None else f"version {last['model_version_id']}"
    if last["state"] != "ok":
        return (f"reload of {version} FAILED after {last['attempts']} attempt(s) at {last['at']}: {last['detail']}; "
                "`kbsync reload` tries again (the daemon's next tick does too)")
    said = "" if last["probed"] is None else f"; the served model named {last['agreed']} of {last['probed']} verified edits"
    warn = "  (FEWER than verified: see docs/serving.md)" if last["probed"] and last["agreed"] < last["probed"] else ""
    return f"{version} reloaded ({last['how']}, {last['export']}) at {last['at']}{said}{warn}"


def _figures(f: dict) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return (f"perplexity {num(f['perplexity'], '.2f')}  known-fact accuracy {num(f['known_acc'], '.2f')} "
            f"({f['n_known']})  retention {num(f['retention'], '.2f')} ({f['n_retention']})")


def _headroom(h: dict) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return (f"known-fact accuracy {num(h['known_acc'], '.2f')} (floor {num(h['known_acc_floor'], '.2f')}), "
            f"perplexity {num(h['perplexity'], '.2f')} (ceiling {num(h['perplexity_ceiling'], '.2f')}), "
            f"retention {num(h['retention'], '.2f')} (floor {num(h['retention_floor'], '.2f')}), "
            f"{h['edits_applied']} edits applied since the base")
