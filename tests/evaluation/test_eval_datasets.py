"""Schema detection and parsing of CounterFact (original and EasyEdit) and zsRE (MEND)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from required import shared_data  # tests/ is on sys.path

from kbsync.errors import ConfigError
from kbsync.evaluation.datasets import detect_schema, find_subject, load_cases, select

ORIGINAL = [{
    "case_id": 7, "pararel_idx": 1,
    "requested_rewrite": {"prompt": "{}, the", "relation_id": "P1303", "subject": "Toko Yasuda",
                          "target_new": {"str": "piano", "id": "Q5994"},
                          "target_true": {"str": "guitar", "id": "Q6607"}},
    "paraphrase_prompts": ["Toko Yasuda is incredible at the", "Toko Yasuda produces the most amazing music on the"],
    "neighborhood_prompts": ["John Lennon performs on the", "Jimi Hendrix plays the", "Kurt Cobain, the"],
    "attribute_prompts": ["Glenn Gould plays the"],
    "generation_prompts": ["Toko Yasuda is known for"],
}]

ZSRE = [
    {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?", "pred": "Trinity College",
     "rephrase": "What university did Watts Humphrey take part in?", "alt": "University of Michigan",
     "answers": ["Illinois Institute of Technology"], "loc": "nq question: who played desmond doss father",
     "loc_ans": "Hugo Weaving", "cond": "Trinity College >> University of Michigan || ..."},
    {"src": "What is the final year of Plymouth Duster?", "rephrase": "Which year was the last of Plymouth Duster?",
     "alt": "1990", "answers": ["1976"], "loc": "nq question: where is the eiffel tower", "loc_ans": "Paris"},
]


def _write(tmp_path: Path, data, name: str = "d.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_counterfact_original_schema(tmp_path: Path) -> None:
    schema, cases = load_cases(_write(tmp_path, ORIGINAL))
    assert schema == "counterfact"
    (c,) = cases
    assert (c.case_id, c.prompt, c.subject, c.target_new, c.target_true) == ("7", "Toko Yasuda, the", "Toko Yasuda",
                                                                            "piano", "guitar")
    assert len(c.paraphrases) == 2
    assert c.neighbours[1] == ("Jimi Hendrix plays the", "guitar")  # neighbours keep the true object
    assert c.request(3).text == "Toko Yasuda, the" and c.request(3).target_old == "guitar"


def test_counterfact_reduced_schema_and_jsonl(tmp_path: Path, reduced: list[dict]) -> None:
    schema, cases = load_cases(_write(tmp_path, reduced))
    assert schema == "cf-reduced" and len(cases) == 4
    c = cases[1]
    assert (c.prompt, c.subject, c.target_new, c.target_true) == ("The instrument of Toko Yasuda", "Toko Yasuda",
                                                                  "piano", "guitar")
    assert c.paraphrases == ("Toko Yasuda plays the",)
    assert c.neighbours == (("Danielle Darrieux speaks", "French"),)
    lines = "\n".join(json.dumps(r) for r in reduced) + "\n"
    assert load_cases(_write(tmp_path, lines, "d.jsonl"))[1] == cases


def test_the_shared_counterfact_file_is_the_reduced_schema() -> None:
    path = shared_data("counterfact-train.json")
    schema, cases = load_cases(path)
    assert schema == "cf-reduced" and len(cases) == 10000
    assert cases[0].subject == "Toko Yasuda" and cases[0].neighbours == (("John Lennon performs on the", "guitar"),)


def test_zsre_schema_with_and_without_subject(tmp_path: Path) -> None:
    schema, cases = load_cases(_write(tmp_path, ZSRE))
    assert schema == "zsre"
    a, b = cases
    assert (a.subject, a.target_new, a.target_true) == ("Watts Humphrey", "University of Michigan",
                                                        "Illinois Institute of Technology")
    assert a.paraphrases == ("What university did Watts Humphrey take part in?",)
    assert a.neighbours == (("nq question: who played desmond doss father", "Hugo Weaving"),)
    assert b.subject == "Plymouth Duster" and b.valid


@pytest.mark.parametrize(("question", "subject"), [
    ("What is the final year of Plymouth Duster?", "Plymouth Duster"),
    ("Which river is Xiang Jiang a part of?", "Xiang Jiang"),
    ("Who was the designer of Lahti L-35?", "Lahti L-35"),
    ("what is the country of origin of coca-cola?", "coca-cola"),
])
def test_find_subject(question: str, subject: str) -> None:
    assert find_subject(question) == subject


def test_unknown_schema_is_one_config_error_naming_the_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_cases(_write(tmp_path, [{"question": "?", "answer": "!"}]))
    msg = str(err.value)
    assert "\n" not in msg
    assert all(f in msg for f in ("requested_rewrite", "rephrase_prompt", "locality_ground_truth", "loc_ans"))
    assert detect_schema("text") is None


@pytest.mark.parametrize("content", ["not json at all {", "[]", "{\"a\": 1}"])
def test_unreadable_or_empty_files(tmp_path: Path, content: str) -> None:
    with pytest.raises(ConfigError, match="dataset"):
        load_cases(_write(tmp_path, content))
    with pytest.raises(ConfigError, match="cannot read dataset"):
        load_cases(tmp_path / "missing.json")


def test_mixed_schemas_and_malformed_fields(tmp_path: Path, reduced: list[dict]) -> None:
    with pytest.raises(ConfigError, match="record 1 is not in the cf-reduced schema"):
        load_cases(_write(tmp_path, [reduced[0], ZSRE[0]]))
    broken = [dict(ORIGINAL[0], requested_rewrite={**ORIGINAL[0]["requested_rewrite"], "target_new": "piano"})]
    with pytest.raises(ConfigError, match="record 0 has a malformed field"):
        load_cases(_write(tmp_path, broken))


def test_select_skips_uneditable_cases_then_offsets(tmp_path: Path, reduced: list[dict]) -> None:
    records = [dict(reduced[0], subject="Nobody")] + reduced
    _, cases = load_cases(_write(tmp_path, records))
    chosen, skipped = select(cases, offset=1, limit=2)
    assert skipped == 1
    assert [c.case_id for c in chosen] == ["1", "2"]
    assert select(cases, offset=10)[0] == []


def test_cases_get_their_relations_catalogue_phrasings_never_their_own(tmp_path) -> None:
    """Paraphrase-aware targets in eval: the relation's catalogue paraphrases (found by relation id
    or by prompt template), never the case's own paraphrase prompts, which it is measured on."""
    from kbsync.evaluation.datasets import EvalCase
    from kbsync.evaluation.run import relation_phrasings
    from kbsync.sources.catalogue import load_catalogue

    p17 = load_catalogue()["P17"]
    by_template = EvalCase("1", p17.prompt.replace("{}", "Lyon"), "Lyon", "Japan", "France", ("Lyon, in",), ())
    by_id = EvalCase("2", "Where is Lyon? In", "Lyon", "Japan", "France", (), (), relation="P17")
    unknown = EvalCase("3", "Lyon, the", "Lyon", "Japan", "France", ("Lyon, in",), ())
    (tmp_path / "known_1000.json").write_text('[{"template": "{}, the", "relation_id": "P17"}]')
    of = relation_phrasings(tmp_path / "cf.json")
    assert of(by_template) == of(by_id) == tuple(p17.paraphrases) and "Lyon, in" not in of(by_template)
    assert of(unknown) == tuple(p17.paraphrases)
    assert relation_phrasings(None)(unknown) == ()
