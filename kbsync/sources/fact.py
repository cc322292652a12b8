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
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
