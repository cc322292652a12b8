"""The SPARQL text builders refuse what is not an IRI with a real error, not an assert that
`python -O` removes (issue 25)."""

from __future__ import annotations

import pytest

from kbsync.errors import SourceError
from kbsync.sources.queries import WD, iri_ref, truthy_query


def test_iri_ref_wraps_an_iri() -> None:
    assert iri_ref(WD + "Q142") == f"<{WD}Q142>"


@pytest.mark.parametrize("bad", ["", "http://x.org/a b", 'http://x.org/a"> } DROP', "http://x.org/<a>",
                                 "http://x.org/{a}", "http://x.org/a\nb"])
def test_iri_ref_refuses_what_would_change_the_query(bad: str) -> None:
    with pytest.raises(SourceError, match="not an IRI"):
        iri_ref(bad)
    with pytest.raises(SourceError, match="not an IRI"):   # a whole query too, e.g. an item a KB returned
        truthy_query([WD + "Q1", bad], ["P36"])
