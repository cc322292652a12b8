"""Every command against unwritable, missing and garbage paths (issue 15 #3): a one-line error,
a non-zero exit, never a traceback.

The commands and their path options are read from the click tree, so a new command or path
option is covered (and must be classified below as an input or an output) without editing this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from kbsync.cli.main import _register, cli
from kbsync.store import db as store_db

_register()


def commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out += commands(cmd, (*prefix, name))
        else:
            out.append(((*prefix, name), cmd))
    return out


COMMANDS = commands()
# What a command needs on its line to get past click's own checks (paths are filled in per test).
REQUIRED = {("rollback",): ["1"], ("export",): ["{path}"], ("eval",): ["--dataset", "{path}"],
            ("bootstrap",): ["--dump", "{path}"]}
# Path parameters (click.Path) by role: an input is read, an output is written.
INPUTS = {("eval", "dataset"), ("bootstrap", "dump")}
OUTPUTS = {("export", "dest"), ("eval", "json_out")}


def path_params() -> list[tuple[tuple[str, ...], click.Parameter]]:
    return [(name, p) for name, cmd in COMMANDS for p in cmd.params if isinstance(p.type, click.Path)]


def bad_paths(tmp_path: Path) -> dict[str, Path]:
    afile = tmp_path / "a-file"
    afile.write_text("just a file")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff\xfe\x00garbage\x9c")
    (tmp_path / "a-dir").mkdir(exist_ok=True)
    full = tmp_path / "full-dir"
    full.mkdir(exist_ok=True)
    (full / "x").write_text("x")
    return {
        "missing": tmp_path / "no" / "such" / "file.toml",
        "under-a-file": afile / "sub" / "out",     # like /etc/passwd/out
        "unwritable": Path("/proc/kbsync-no-such/out"),  # not writable, even for root
        "garbage": garbage,
        "directory": tmp_path / "a-dir",
        "non-empty-dir": full,
        "a-file": afile,
    }


def one_line_failure(run_cli, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    try:
        r = run_cli(*args, env=env)
    except Exception as exc:  # noqa: BLE001 - the point: nothing may escape as a traceback
        pytest.fail(f"kbsync {' '.join(args)} raised {type(exc).__name__}: {exc}")
    assert r.exit_code != 0, f"kbsync {' '.join(args)} exited 0: {r.out}"
    assert "Traceback" not in r.err, r.err
    lines = [line for line in r.err.strip().splitlines() if not line.startswith("{")]  # JSON log lines aside
    assert len(lines) == 1, f"kbsync {' '.join(args)}: {r.err!r}"
    return r


def line_for(name: tuple[str, ...], path: Path) -> list[str]:
    return [*name, *(a.replace("{path}", str(path)) for a in REQUIRED.get(name, []))]


def test_every_path_parameter_is_classified() -> None:
    found = {(name[-1], p.name) for name, p in path_params()}
    assert found == INPUTS | OUTPUTS


@pytest.mark.parametrize("kind", ["missing", "under-a-file", "garbage", "directory"])
@pytest.mark.parametrize("name", [n for n, _ in COMMANDS], ids=" ".join)
def test_every_command_with_a_bad_config_file(run_cli, tmp_path: Path, name, kind) -> None:
    path = bad_paths(tmp_path)[kind]
    if kind == "garbage":  # not UTF-8 (issue 15 #3)
        path = path.with_suffix(".toml")
        path.write_bytes(b"\xff\xfe[state]\n")
    r = one_line_failure(run_cli, "--config", str(path), *line_for(name, tmp_path / "x"))
    assert r.exit_code == 2 and r.err.startswith(("ConfigError:", "UsageError:")) and str(path) in r.err


@pytest.fixture
def upgraded(tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir()
    store_db.upgrade(f"sqlite:///{state / 'kbsync.db'}")
    return {"KBSYNC_STATE__DIR": str(state)}


def path_cases() -> list[tuple[tuple[str, ...], str, str]]:
    cases = []
    for name, p in path_params():
        role = "out" if (name[-1], p.name) in OUTPUTS else "in"
        kinds = (["under-a-file", "unwritable", "a-file", "non-empty-dir"] if role == "out"
                 else ["missing", "garbage", "directory", "under-a-file"])
        if (name[-1], p.name) == ("eval", "json_out"):
            kinds = ["under-a-file", "unwritable", "directory"]
        cases += [(name, p.name or "", kind) for kind in kinds]
    return cases


@pytest.mark.parametrize(("name", "param", "kind"), path_cases(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_every_path_option_with_a_bad_path(run_cli, tmp_path: Path, upgraded, name, param, kind) -> None:
    bad = bad_paths(tmp_path)[kind]
    dataset = tmp_path / "cases.json"
    dataset.write_text(json.dumps([]))
    cmd = dict(COMMANDS)[name]
    opt = next(p for p in cmd.params if p.name == param)
    if opt.param_type_name == "argument" or opt.opts[0] in REQUIRED.get(name, []):
        args = line_for(name, bad)  # the path a command needs on its line is the bad one
    else:
        args = [*line_for(name, dataset), opt.opts[0], str(bad)]
    r = one_line_failure(run_cli, "--log-level", "error", *args, env=upgraded)
    assert str(bad) in r.err or bad.name in r.err, r.err


ENV_CASES = [
    ("KBSYNC_STATE__DIR", "under-a-file", ["status"], ["db", "upgrade"], ["diff"], ["apply"], ["export", "{out}"],
     ["stats"], ["config", "check"]),
    ("KBSYNC_STATE__DIR", "unwritable", ["status"], ["diff"], ["apply"], ["rollback", "1"]),
    ("KBSYNC_KB__FILES", "missing", ["diff"]),
    ("KBSYNC_KB__FILES", "garbage", ["diff"]),
    ("KBSYNC_KB__FILES", "directory", ["diff"]),
    ("KBSYNC_RELATIONS__CATALOGUE", "missing", ["diff"]),
    ("KBSYNC_RELATIONS__CATALOGUE", "garbage", ["diff"]),
    ("KBSYNC_RELATIONS__CATALOGUE", "directory", ["diff"]),
    ("KBSYNC_MODEL__PATH", "missing", ["export", "{out}"], ["apply"], ["stats"], ["verify"]),
    ("KBSYNC_MODEL__PATH", "garbage-model", ["export", "{out}"], ["apply"], ["stats"]),
    ("KBSYNC_MODEL__PATH", "garbage-gguf", ["export", "{out}"], ["stats"]),
    ("KBSYNC_DATABASE__URL", "garbage-url", ["status"], ["db", "upgrade"], ["db", "revision"]),
    ("KBSYNC_DATABASE__URL", "unwritable-sqlite", ["status"], ["db", "upgrade"]),
    ("KBSYNC_DATABASE__URL", "garbage-sqlite", ["status"], ["db", "upgrade"], ["db", "revision"]),
]


@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: f"{c[0]}={c[1]}")
def test_path_settings_with_bad_values(run_cli, tmp_path: Path, upgraded, case) -> None:
    var, kind, *lines = case
    paths = bad_paths(tmp_path)
    garbage_model = tmp_path / "garbage-model"
    garbage_model.mkdir()
    (garbage_model / "config.json").write_bytes(b"\xff{not json")
    gguf = tmp_path / "garbage.gguf"
    gguf.write_bytes(b"GGUF-not-really" * 10)
    value = {
        "garbage-model": str(garbage_model), "garbage-gguf": str(gguf), "garbage-url": "not a url at all",
        "unwritable-sqlite": "sqlite:////proc/kbsync-no-such/k.db", "garbage-sqlite": f"sqlite:///{paths['garbage']}",
    }.get(kind) or str(paths[kind])
    if var in ("KBSYNC_KB__FILES",):
        value = json.dumps([value])
    for line in lines:
        args = [a.replace("{out}", str(tmp_path / "export-out")) for a in line]
        one_line_failure(run_cli, "--log-level", "error", *args, env=upgraded | {var: value})
