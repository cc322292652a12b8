"""Build the configured knowledge source and catalogue from kbsync's settings ([kb], [relations])."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from kbsync.config import Settings, parse_as_of
from kbsync.sources.catalogue import Catalogue, load_catalogue
from kbsync.sources.entities import EntitySource
from kbsync.sources.eventstream import EventStream, StreamOptions
from kbsync.sources.rdf import Engine, RdfFileSource
from kbsync.sources.reader import QueryReader, ReadOptions
from kbsync.sources.sparql import EndpointOptions, SparqlEndpointSource
from kbsync.sources.subjects import SubjectSelection
from kbsync.sources.wikidata_api import ApiOptions, WikidataApi


def open_catalogue(settings: Settings) -> Catalogue:
    extra = settings.relations.catalogue
    return load_catalogue(Path(extra) if extra else None)


def open_source(
    settings: Settings,
    catalogue: Catalogue | None = None,
    as_of: datetime | None = None,
    scratch_dir: Path | None = None,
) -> QueryReader | EntitySource:
    """The source named by [kb] source; nothing is read or connected until its first read.

    What is current is decided as of `as_of`, else [kb] as_of, else the moment of each read.
    `scratch_dir`: where large RDF files are stored on disk while read (default: the temp dir)."""
    kb = settings.kb
    catalogue = catalogue if catalogue is not None else open_catalogue(settings)
    options = ReadOptions(
        mode=kb.mode,
        language=kb.language,
        page_size=kb.page_size,
        overlap=timedelta(seconds=kb.overlap_s),
        selection=SubjectSelection.from_config(kb.subjects),
        as_of=as_of or configured_as_of(settings),
    )
    if kb.source == "wikidata":   # entity fetches of given subjects (kbsync follow says which changed)
        return EntitySource(open_wikidata_api(settings), options=options, catalogue=catalogue)
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
    return RdfFileSource(
        kb.files, engine=engine, options=options, catalogue=catalogue, scratch_dir=scratch_dir
    )


def configured_as_of(settings: Settings) -> datetime | None:
    return parse_as_of(settings.kb.as_of) if settings.kb.as_of else None


def open_wikidata_api(settings: Settings) -> WikidataApi:
    kb = settings.kb
    return WikidataApi(ApiOptions(api_url=kb.api_url, entity_url=kb.entity_url, user_agent=kb.user_agent,
                                  fetch=kb.fetch, language=kb.language, maxlag_s=kb.maxlag_s, timeout_s=kb.timeout_s,
                                  max_attempts=kb.max_attempts))


def open_event_stream(settings: Settings) -> EventStream:
    kb = settings.kb
    return EventStream(StreamOptions(url=kb.eventstreams_url, user_agent=kb.user_agent, idle_s=kb.stream_idle_s,
                                     connect_timeout_s=kb.timeout_s, max_attempts=kb.max_attempts))
