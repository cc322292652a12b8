"""Reference tables generated from the settings and the CLI so they cannot drift.

`python -m kbsync.docs` rewrites the marked sections: the commands table in README.md and the
settings table in docs/reference.md. tests/test_docs.py fails when either differs from what
this generates (a setting or command added without docs).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from kbsync.config import iter_settings


def settings_table() -> str:
    rows = ["| setting | default | what it does |", "| --- | --- | --- |"]
    for section, key, default, help_text in iter_settings():
        shown = json.dumps(str(default) if isinstance(default, Path) else default)
        rows.append(f"| `[{section}] {key}` | `{shown}` | {help_text} |")
    return "\n".join(rows)


def _walk(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    out = []
    for name in sorted(group.commands):
        cmd = group.commands[name]
        path = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out.extend(_walk(cmd, path))
        else:
            out.append((path, cmd))
    return out


def commands_table() -> str:
    from kbsync.cli.main import _register, cli

    _register()
    rows = ["| command | what it does | example |", "| --- | --- | --- |"]
    for path, cmd in _walk(cli, "kbsync"):
        help_text = cmd.help or ""
        summary = help_text.strip().splitlines()[0]
        example = re.search(r"Example:\s*(.+)", help_text)
        rows.append(f"| `{path}` | {summary} | `{example.group(1).strip() if example else ''}` |")
    return "\n".join(rows)


def _filler(body: str):  # type: ignore[no-untyped-def]
    return lambda m: m.group(1) + body + "\n" + m.group(2)


ROOT = Path(__file__).resolve().parents[1]
# file (relative to the repository) -> the generated sections it holds
SECTIONS = {"README.md": {"commands": commands_table}, "docs/reference.md": {"settings": settings_table}}


def render(text: str, where: str) -> str:
    for name, make in SECTIONS[where].items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{where} has no <!-- {name}:start --> ... <!-- {name}:end --> section")
        text = pattern.sub(_filler(make()), text)
    return text


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for where in SECTIONS:
        path = root / where
        path.write_text(render(path.read_text(encoding="utf-8"), where), encoding="utf-8")


if __name__ == "__main__":
    main()
