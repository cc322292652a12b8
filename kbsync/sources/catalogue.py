"""The relation catalogue: which Wikidata properties kbsync syncs and how it asks the model.

The shipped entries live in ``relations.toml`` beside this module; a user file (config
``[relations] catalogue``) in the same format adds entries or overrides fields of shipped
ones. Every problem is a one-line CatalogueError naming the file, the entry and the fix.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from kbsync.errors import CatalogueError
from kbsync.prompts import fill  # noqa: F401  (sync/checks.py imports it from here)

PROPERTY_ID = re.compile(r"P[1-9][0-9]*")
FIELDS = ("id", "label", "prompt", "paraphrases", "single_valued", "question")
MAX_TEMPLATE_CHARS = 200  # a prompt is this plus a label of at most [kb] max_label_chars


@dataclass(frozen=True)
class Relation:
    id: str  # "P36"
    label: str  # "capital"
    prompt: str  # "The capital of {} is": one "{}" for the subject, the object comes next
    paraphrases: tuple[str, ...]
    single_valued: bool
    question: str = ""  # "What is the capital of {}?": asked as a person asks it (apply trains on it; "" none)

    def prompt_for(self, subject: str) -> str:
        return fill(self.prompt, subject)

    def paraphrases_for(self, subject: str) -> list[str]:
        return [fill(t, subject) for t in self.paraphrases]


class Catalogue:
    def __init__(self, relations: dict[str, Relation]):
        self._relations = dict(relations)

    def __getitem__(self, relation_id: str) -> Relation:
        try:
            return self._relations[relation_id]
        except KeyError:
            raise CatalogueError(
                f"unknown relation {relation_id!r}; known: {', '.join(self.ids())}; "
                "add it to the file named by [relations] catalogue"
            ) from None

    def __contains__(self, relation_id: object) -> bool:
        return relation_id in self._relations

    def __iter__(self) -> Iterator[Relation]:
        return iter(self._relations[i] for i in self.ids())

    def __len__(self) -> int:
        return len(self._relations)

    def ids(self) -> list[str]:
        return sorted(self._relations, key=lambda i: int(i[1:]))

    def select(self, relation_ids: Sequence[str]) -> list[Relation]:
        """The named relations (all of them when empty); CatalogueError for an unknown id."""
        return [self[i] for i in relation_ids] if relation_ids else list(self)


def load_catalogue(extra: Path | None = None) -> Catalogue:
    """The shipped catalogue, with the entries of `extra` (a TOML file) added or overriding."""
    shipped = resources.files("kbsync.sources").joinpath("relations.toml")
    relations = _parse(shipped.read_text(encoding="utf-8"), "relations.toml (shipped)", {})
    if extra is not None:
        path = Path(extra)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogueError(
                f"relation catalogue {path}: cannot read it ({exc.strerror}); "
                "fix [relations] catalogue"
            ) from exc
        except UnicodeDecodeError as exc:
            raise CatalogueError(f"relation catalogue {path} is not UTF-8 text (byte {exc.start}); "
                                 "fix [relations] catalogue") from exc
        relations = _parse(text, str(path), relations)
    return Catalogue(relations)


def _parse(text: str, origin: str, base: dict[str, Relation]) -> dict[str, Relation]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{origin}: not valid TOML ({exc}); fix the syntax") from exc
    unknown_top = set(data) - {"relation"}
    if unknown_top or not isinstance(data.get("relation", []), list):
        raise CatalogueError(
            f"{origin}: expected only [[relation]] tables, found {sorted(unknown_top) or 'relation'}; "
            'write each entry as [[relation]] with id = "P36"'
        )
    out = dict(base)
    seen: set[str] = set()
    for n, entry in enumerate(data.get("relation", []), start=1):
        relation = _entry(entry, f"{origin}: [[relation]] #{n}", base)
        if relation.id in seen:
            raise CatalogueError(
                f"{origin}: relation {relation.id} is defined twice; keep one entry"
            )
        seen.add(relation.id)
        out[relation.id] = relation
    return out


def _entry(entry: dict[str, Any], where: str, base: dict[str, Relation]) -> Relation:
    rid = entry.get("id")
    if not isinstance(rid, str) or not PROPERTY_ID.fullmatch(rid):
        raise CatalogueError(
            f'{where}: id {rid!r} is not a Wikidata property id; use e.g. id = "P36"'
        )
    where = f"{where} ({rid})"
    unknown = set(entry) - set(FIELDS)
    if unknown:
        raise CatalogueError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(FIELDS)}"
        )
    if rid not in base:
        missing = [k for k in ("label", "prompt", "paraphrases") if k not in entry]
        if missing:
            raise CatalogueError(f"{where}: a new relation needs {', '.join(missing)}; add them")
    values = _typed(entry, where)
    if rid in base:
        relation = replace(base[rid], **values)
    else:
        relation = Relation(**{"single_valued": False, **values})
    for template in (relation.prompt, *relation.paraphrases):
        _check_template(template, where)
    if relation.question:
        _check_template(relation.question, where)
        if not relation.question.rstrip().endswith("?"):
            raise CatalogueError(f"{where}: question {relation.question!r} does not end in '?'; "
                                 "write it as a question, e.g. \"What is the capital of {}?\"")
    if not relation.paraphrases:
        raise CatalogueError(
            f"{where}: paraphrases is empty; give at least one paraphrase template"
        )
    return relation


def _typed(entry: dict[str, Any], where: str) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(Relation)}
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "paraphrases":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise CatalogueError(f"{where}: paraphrases must be a list of strings")
            value = tuple(value)
        elif types[key] == "bool" and not isinstance(value, bool):
            raise CatalogueError(f"{where}: {key} must be true or false, got {value!r}")
        elif types[key] == "str" and not isinstance(value, str):
            raise CatalogueError(f"{where}: {key} must be a string, got {value!r}")
        out[key] = value
    return out


def _check_template(template: str, where: str) -> None:
    if len(template) > MAX_TEMPLATE_CHARS:
        raise CatalogueError(
            f"{where}: template {template[:40]!r}... is {len(template)} characters; "
            f"keep prompts under {MAX_TEMPLATE_CHARS}"
        )
    holes = template.count("{}")
    if holes != 1 or template.count("{") != 1 or template.count("}") != 1:
        raise CatalogueError(
            f"{where}: template {template!r} has {holes} '{{}}'; it needs exactly one "
            "'{}' where the subject goes (and no other braces)"
        )
