from __future__ import annotations

from pathlib import Path

import pytest

from kbsync.errors import CatalogueError
from kbsync.sources.catalogue import load_catalogue

REQUIRED = (
    "P17 P19 P20 P27 P30 P36 P37 P39 P101 P103 P106 P108 P127 P131 P136 P138 P140 P159 P176 "
    "P178 P190 P264 P276 P364 P407 P413 P449 P463 P495 P641 P740 P937 P1303 P1412"
).split()


def test_shipped_catalogue_covers_every_relation_with_paraphrases():
    catalogue = load_catalogue()
    assert set(REQUIRED) <= set(catalogue.ids())
    for relation in catalogue:
        assert relation.label
        assert len(relation.paraphrases) >= 2, relation.id
        assert (
            len(set(relation.paraphrases) | {relation.prompt}) == len(relation.paraphrases) + 1
        ), relation.id
        for template in (relation.prompt, *relation.paraphrases):
            assert template.count("{}") == 1, (relation.id, template)
            assert not template.endswith(" "), (relation.id, template)  # the object comes next
        assert relation.question.count("{}") == 1 and relation.question.endswith("?"), relation.id
    assert catalogue["P36"].prompt_for("France") == "The capital of France is"
    assert catalogue["P36"].label == "capital"  # Wikidata's English label
    assert catalogue["P190"].single_valued is False


def test_user_file_overrides_fields_and_adds_relations(tmp_path: Path):
    extra = tmp_path / "relations.toml"
    extra.write_text(
        '[[relation]]\nid = "P36"\nprompt = "{}\'s seat of government is"\n\n'
        '[[relation]]\nid = "P1376"\nlabel = "capital of"\nprompt = "{} is the capital of"\n'
        'paraphrases = ["{} serves as the capital of"]\nsingle_valued = true\n',
        encoding="utf-8",
    )
    catalogue = load_catalogue(extra)
    shipped = load_catalogue()
    assert catalogue["P36"].prompt == "{}'s seat of government is"
    assert catalogue["P36"].paraphrases == shipped["P36"].paraphrases  # untouched fields stay
    assert catalogue["P1376"].prompt_for("Paris") == "Paris is the capital of"
    assert catalogue["P1376"].single_valued is True
    assert len(catalogue) == len(shipped) + 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[relation]]\nid = "P36"\nprompt = "The capital is"\n', "needs exactly one '{}'"),
        ('[[relation]]\nid = "P36"\nprompt = "{} and {} is"\n', "has 2 '{}'"),
        ('[[relation]]\nid = "P36"\nparaphrases = ["{x} is"]\n', "no other braces"),
        (
            '[[relation]]\nid = "P36"\nprompt = "{} a"\n\n[[relation]]\nid = "P36"\nprompt = "{} b"\n',
            "P36 is defined twice",
        ),
        (
            '[[relation]]\nid = "capital"\nprompt = "{} is"\n',
            "'capital' is not a Wikidata property id",
        ),
        ('[[relation]]\nid = "P36"\npromt = "{} is"\n', "unknown key(s) ['promt']"),
        (
            '[[relation]]\nid = "P9999"\nprompt = "{} is"\n',
            "a new relation needs label, paraphrases",
        ),
        (
            '[[relation]]\nid = "P36"\nsingle_valued = "yes"\n',
            "single_valued must be true or false",
        ),
        ('[[relation]]\nid = "P36"\nquestion = "Tell me the capital of {}."\n', "does not end in '?'"),
        ('[[relation]]\nid = "P36"\nquestion = "What is the capital?"\n', "needs exactly one '{}'"),
        ('[relation\nid = "P36"\n', "not valid TOML"),
        ('[P36]\nprompt = "{} is"\n', "expected only [[relation]] tables"),
    ],
)
def test_bad_user_file_is_one_line_error(tmp_path: Path, text: str, expected: str):
    extra = tmp_path / "bad.toml"
    extra.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogueError) as info:
        load_catalogue(extra)
    assert expected in str(info.value)
    assert str(extra) in str(info.value)
    assert "\n" not in info.value.one_line()


def test_missing_user_file(tmp_path: Path):
    with pytest.raises(
        CatalogueError, match=r"missing\.toml: cannot read it .*\[relations\] catalogue"
    ):
        load_catalogue(tmp_path / "missing.toml")


def test_unknown_relation_id():
    catalogue = load_catalogue()
    with pytest.raises(
        CatalogueError,
        match=r"unknown relation 'P9999'; known: P6, P17, P19, .*\[relations\] catalogue",
    ):
        catalogue["P9999"]
    with pytest.raises(CatalogueError):
        catalogue.select(["P36", "P9999"])
    assert [r.id for r in catalogue.select([])] == catalogue.ids()


def test_overlong_template_is_refused(tmp_path: Path):
    path = tmp_path / "long.toml"
    long_prompt = "The " + "very " * 60 + "capital of {} is"
    path.write_text(f'[[relation]]\nid = "P36"\nprompt = "{long_prompt}"\n', encoding="utf-8")
    with pytest.raises(CatalogueError, match="characters; keep prompts under 200"):
        load_catalogue(path)
