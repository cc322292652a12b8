"""Which subjects a read covers: a list of ids, a selector, or every subject with a relation.

Config ``[kb] subjects`` is either a list of entity ids (``["Q142", "Q183"]``) or one
selector: a relation id (``"P36"``: every item with a capital) or a SPARQL WHERE fragment
that binds ``?item`` (``"?item wdt:P31 wd:Q6256 ."``). Empty: every subject that has one
of the requested relations (fine for RDF files; on Wikidata, give ids or a selector).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kbsync.errors import ConfigError
from kbsync.sources.catalogue import PROPERTY_ID
from kbsync.sources.queries import WD, WDT, P, iri_ref

ENTITY_ID = re.compile(r"[QPL][1-9][0-9]*")


@dataclass(frozen=True)
class SubjectSelection:
    ids: tuple[str, ...] | None = None  # subject IRIs, in the given order
    selector: str | None = None  # a relation id or a WHERE fragment binding ?item

    @classmethod
    def from_config(cls, entries: Sequence[str]) -> SubjectSelection:
        """[kb] subjects: [] -> all; [selector] -> selector; [ids...] -> ids."""
        if not entries:
            return cls()
        if len(entries) == 1 and (PROPERTY_ID.fullmatch(entries[0]) or "?item" in entries[0]):
            return cls(selector=entries[0])
        return cls.of_ids(entries)

    @classmethod
    def of_ids(cls, ids: Sequence[str]) -> SubjectSelection:
        return cls(ids=tuple(dict.fromkeys(subject_iri(i) for i in ids)))

    def where(self, mode: Literal["truthy", "statements"], relations: Sequence[str]) -> str:
        """A WHERE-clause body binding ?item (used to list subjects; ids need no query)."""
        prefix = WDT if mode == "truthy" else P
        if self.ids is not None:
            return "VALUES ?item { " + " ".join(iri_ref(i) for i in self.ids) + " }"
        if self.selector is None:
            props = " ".join(iri_ref(prefix + r) for r in relations)
            return f"VALUES ?anyProp {{ {props} }} ?item ?anyProp [] ."
        if PROPERTY_ID.fullmatch(self.selector):
            return f"?item {iri_ref(prefix + self.selector)} [] ."
        return self.selector


def subject_iri(subject: str) -> str:
    """ "Q142", "wd:Q142" or an absolute IRI -> the IRI; ConfigError otherwise."""
    text = subject.strip()
    if text.startswith("wd:"):
        text = text[3:]
    if ENTITY_ID.fullmatch(text):
        return WD + text
    if re.fullmatch(r"[a-z][a-z0-9+.-]*://[^\s<>\"{}|\\^`]+", text):
        return text
    raise ConfigError(
        f"subject {subject!r} is not an entity id like Q142 or an absolute IRI; fix [kb] subjects"
    )
