"""Knowledge sources: Wikidata-shaped facts from local RDF files or a SPARQL endpoint.

Fact, KnowledgeSource, read_all          fact.py
Relation, Catalogue, load_catalogue      catalogue.py (+ relations.toml, shipped)
RdfFileSource                            rdf.py      (rdflib or pyoxigraph, in process)
SparqlEndpointSource, EndpointOptions    sparql.py   (SPARQLWrapper, retries)
ReadOptions, SubjectSelection            reader.py, subjects.py
open_source, open_catalogue              factory.py  (from kbsync's settings)
"""

from kbsync.sources.catalogue import Catalogue, Relation, load_catalogue
from kbsync.sources.fact import Fact, KnowledgeSource, read_all
from kbsync.sources.factory import open_catalogue, open_source
from kbsync.sources.rdf import RdfFileSource
from kbsync.sources.reader import ReadOptions
from kbsync.sources.sparql import EndpointOptions, SparqlEndpointSource
from kbsync.sources.subjects import SubjectSelection

__all__ = [
    "Catalogue",
    "EndpointOptions",
    "Fact",
    "KnowledgeSource",
    "ReadOptions",
    "RdfFileSource",
    "Relation",
    "SparqlEndpointSource",
    "SubjectSelection",
    "load_catalogue",
    "open_catalogue",
    "open_source",
    "read_all",
]
