from __future__ import annotations

from datetime import timedelta

from kbsync.config import Settings
from kbsync.sources import RdfFileSource, SparqlEndpointSource, open_source

from .conftest import RANKS


def test_rdf_source_from_settings(tmp_path):
    extra = tmp_path / "relations.toml"
    extra.write_text(
        '[[relation]]\nid = "P36"\nprompt = "{} has its capital in"\n', encoding="utf-8"
    )
    settings = Settings.model_validate(
        {
            "kb": {
                "files": [str(RANKS)],
                "subjects": ["P463"],
                "mode": "statements",
                "overlap_s": 60,
            },
            "relations": {"catalogue": str(extra)},
        }
    )
    source = open_source(settings)
    assert isinstance(source, RdfFileSource)
    assert source.options.overlap == timedelta(seconds=60)
    assert source.catalogue["P36"].prompt == "{} has its capital in"
    assert [(f.subject, f.relation) for f in source.read_all(["P36", "P463"])] == [
        ("Q30", "P36"),
        ("Q30", "P463"),
    ]


def test_sparql_source_from_settings():
    settings = Settings.model_validate(
        {
            "kb": {
                "source": "sparql",
                "endpoint": "http://127.0.0.1:1/sparql",
                "timeout_s": 5,
                "max_attempts": 2,
            }
        }
    )
    source = open_source(settings)
    assert isinstance(source, SparqlEndpointSource)
    backend = source.backend()
    assert (backend.options.timeout_s, backend.options.max_attempts) == (5, 2)
    assert backend.options.user_agent == "kbsync"  # no contact: refused by Wikimedia hosts (useragent.py)
