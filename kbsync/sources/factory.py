"""Build the configured knowledge source and catalogue from kbsync's settings ([kb], [relations])."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from kbsync.config import Settings
from kbsync.sources.catalogue import Catalogue, load_catalogue
from kbsync.sources.rdf import Engine, RdfFileSource
from kbsync.sources.reader import QueryReader, ReadOptions
from kbsync.sources.sparql import EndpointOptions, SparqlEndpointSource
from kbsync.sources.subjects import SubjectSelection


def open_catalogue(settings: Settings) -> Catalogue:
    extra = settings.relations.catalogue
    return load_catalogue(Path(extra) if extra else None)


def open_source(settings: Settings, catalogue: Catalogue | None = None) -> QueryReader:
    """The source named by [kb] source; nothing is read or connected until its first read."""
    kb = settings.kb
    catalogue = catalogue if catalogue is not None else open_catalogue(settings)
    options = ReadOptions(
        mode=kb.mode,
        language=kb.language,
        page_size=kb.page_size,
        overlap=timedelta(seconds=kb.overlap_s),
        selection=SubjectSelection.from_config(kb.subjects),
    )
    if kb.source == "sparql":
        endpoint = EndpointOptions(
            url=kb.endpoint,
            user_agent=kb.user_agent,
            timeout_s=kb.timeout_s,
            max_attempts=kb.max_attempts,
        )
        return SparqlEndpointSource(endpoint, options=options, catalogue=catalogue)
    engine: Engine = getattr(
        kb, "rdf_engine", "auto"
    )  # a setting the config may add; auto otherwise
    return RdfFileSource(kb.files, engine=engine, options=options, catalogue=catalogue)
