"""What a knowledge source yields: one Fact per (subject, relation), and the source protocol."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Fact:
    subject: str  # Wikidata-style id "Q142" (an absolute IRI when outside the wd: namespace)
    relation: str  # "P36"
    objects: tuple[str, ...]  # acceptable object ids (or literal values), sorted
    subject_label: str
    subject_aliases: tuple[str, ...] = ()
    object_labels: dict[str, str] = field(
        default_factory=dict
    )  # object id -> label (configured language)
    object_aliases: dict[str, tuple[str, ...]] = field(
        default_factory=dict
    )  # only objects with aliases
    revision: str | None = (
        None  # schema:dateModified of the subject, ISO 8601 UTC ("...Z"), if known
    )
    target: str | None = None  # the object an edit teaches (None: the first labelled object)
    stale: tuple[str, ...] = ()  # ended / superseded object ids, most recently ended first
    why: dict[str, dict[str, str | None]] = field(
        default_factory=dict
    )  # object id -> {status, rank, start, end} (sources/timeline.py); not part of the hash

    def texts(self) -> list[str]:
        """Every label and alias a probe or an edit would put in a prompt or answer."""
        objects = (*self.objects, *self.stale)
        return [
            self.subject_label,
            *self.subject_aliases,
            *(self.object_labels.get(o, "") for o in objects),
            *(a for o in objects for a in self.object_aliases.get(o, ())),
        ]

    def content_hash(self) -> str:
        """sha256 (hex) over everything but the revision: equal hashes mean the same KB state."""
        payload = [
            self.subject,
            self.relation,
            sorted(self.objects),
            self.subject_label,
            sorted(self.subject_aliases),
            sorted(self.object_labels.items()),
            sorted((k, sorted(v)) for k, v in self.object_aliases.items()),
        ]
        if self.stale:  # facts without history keep the hash they had before time-aware reads
            payload.append(list(self.stale))
        if self.target is not None and len(self.objects) > 1:
            payload.append(self.target)
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        """The whole fact as JSON (from_json gives it back equal): for spilling a read to disk."""
        return json.dumps([self.subject, self.relation, self.objects, self.subject_label, self.subject_aliases,
                           self.object_labels, self.object_aliases, self.revision, self.target, self.stale,
                           self.why], ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Fact:
        (subject, relation, objects, label, aliases, object_labels, object_aliases, revision, target, stale,
         why) = json.loads(text)
        return cls(subject=subject, relation=relation, objects=tuple(objects), subject_label=label,
                   subject_aliases=tuple(aliases), object_labels=object_labels,
                   object_aliases={k: tuple(v) for k, v in object_aliases.items()}, revision=revision,
                   target=target, stale=tuple(stale), why=why)


@runtime_checkable
class KnowledgeSource(Protocol):
    def read(
        self,
        relations: Sequence[str],
        subjects: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> Iterator[Fact]: ...


def read_all(
    source: KnowledgeSource,
    relations: Sequence[str],
    subjects: Sequence[str] | None = None,
    since: datetime | None = None,
) -> list[Fact]:
    """Every fact, or an exception: a caller updates its snapshot only after a complete read."""
    return list(source.read(relations, subjects=subjects, since=since))
