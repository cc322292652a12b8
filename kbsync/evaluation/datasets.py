"""Read counterfactual-editing benchmarks into one shape, ``EvalCase``, detecting the schema.

    counterfact   ROME/MEMIT's original file: requested_rewrite {prompt with "{}", subject,
                  target_new {str}, target_true {str}}, paraphrase_prompts, neighborhood_prompts
    cf-reduced    EasyEdit's reduced CounterFact: case_id, prompt, subject, target_new,
                  ground_truth, rephrase_prompt, locality_prompt, locality_ground_truth
    zsre          MEND's zsRE: src, alt, answers, rephrase, loc, loc_ans (subject optional)

A neighbour prompt is scored with the answer it must keep: CounterFact's neighbours share the
edited fact's relation and true object, so their answer is target_true; the reduced schema and
zsRE give it (locality_ground_truth, loc_ans).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbsync.editing.request import EditRequest
from kbsync.errors import ConfigError

SCHEMAS = {
    "counterfact": ("requested_rewrite", "paraphrase_prompts", "neighborhood_prompts"),
    "cf-reduced": ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt",
                   "locality_ground_truth"),
    "zsre": ("src", "alt", "answers", "rephrase", "loc", "loc_ans"),
}
_EXPECTED = "; ".join(f"{name}: {', '.join(fields)}" for name, fields in SCHEMAS.items())


@dataclass(frozen=True)
class EvalCase:
    case_id: str
    prompt: str  # the subject filled in
    subject: str
    target_new: str
    target_true: str
    paraphrases: tuple[str, ...]
    neighbours: tuple[tuple[str, str], ...]  # (prompt, the answer it must keep)
    relation: str = ""  # the Wikidata property (CounterFact's relation_id), where the file has one

    def request(self, request_id: int | None = None, paraphrases: tuple[str, ...] = ()) -> EditRequest:
        """The edit; `paraphrases` are what the editor may optimise on (the relation's catalogue
        phrasings, never the case's own paraphrase_prompts, which are what it is measured on)."""
        return EditRequest(self.prompt, self.subject, self.target_new, self.target_true, request_id, paraphrases)

    @property
    def valid(self) -> bool:
        """Editable: the subject occurs in the prompt and both targets are non-empty."""
        return bool(self.subject.strip() and self.subject in self.prompt and self.target_new.strip()
                    and self.target_true.strip())


def detect_schema(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    for name, fields in SCHEMAS.items():
        if all(f in record for f in fields):
            return name
    return None


def load_cases(path: str | Path) -> tuple[str, list[EvalCase]]:
    """(schema name, every case of the file in order); a JSON list or JSON lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read dataset {path} ({exc.strerror or exc}); give an existing JSON file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dataset {path} is not UTF-8 text (byte {exc.start}); give a JSON or JSON-lines file") from exc
    records = _records(text, path)
    schema = detect_schema(records[0]) if records else None
    if schema is None:
        raise ConfigError(f"dataset {path} matches no known schema; expected a JSON list of records with ({_EXPECTED})")
    parse = {"counterfact": _counterfact, "cf-reduced": _cf_reduced, "zsre": _zsre}[schema]
    cases = []
    for n, rec in enumerate(records):
        if detect_schema(rec) != schema:
            raise ConfigError(f"dataset {path} record {n} is not in the {schema} schema of record 0; "
                              f"it needs the fields {', '.join(SCHEMAS[schema])}")
        try:
            cases.append(parse(rec, n))
        except (TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ConfigError(f"dataset {path} record {n} has a malformed field ({type(exc).__name__}: {exc}); "
                              f"fix the record ({schema}: {', '.join(SCHEMAS[schema])})") from exc
    return schema, cases


def _records(text: str, path: Path) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSON lines
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ConfigError(f"dataset {path} is not JSON or JSON lines ({exc.msg} at line {exc.lineno}); "
                              f"give a JSON list of records with ({_EXPECTED})") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"dataset {path} holds no records; expected a JSON list of records with ({_EXPECTED})")
    return data


def _strs(value: Any) -> tuple[str, ...]:
    """A string or a list of strings (EasyEdit files use both)."""
    items = [value] if isinstance(value, str) else list(value or [])
    return tuple(str(s) for s in items if str(s).strip())


def _counterfact(rec: dict, n: int) -> EvalCase:
    rw = rec["requested_rewrite"]
    subject, old = rw["subject"], rw["target_true"]["str"]
    return EvalCase(
        case_id=str(rec.get("case_id", n)),
        prompt=rw["prompt"].format(subject) if "{}" in rw["prompt"] else rw["prompt"],
        subject=subject,
        target_new=rw["target_new"]["str"],
        target_true=old,
        paraphrases=_strs(rec["paraphrase_prompts"]),
        neighbours=tuple((p, old) for p in _strs(rec["neighborhood_prompts"])),
        relation=str(rw.get("relation_id", "")),
    )


def _cf_reduced(rec: dict, n: int) -> EvalCase:
    subject = rec["subject"]
    prompts, answers = _strs(rec["locality_prompt"]), _strs(rec["locality_ground_truth"])
    if len(answers) == 1:
        answers = answers * len(prompts)
    return EvalCase(
        case_id=str(rec.get("case_id", n)),
        prompt=rec["prompt"].format(subject) if "{}" in rec["prompt"] else rec["prompt"],
        subject=subject,
        target_new=_one(rec["target_new"]),
        target_true=_one(rec["ground_truth"]),
        paraphrases=_strs(rec["rephrase_prompt"]),
        neighbours=tuple(zip(prompts, answers, strict=False)),
    )


def _zsre(rec: dict, n: int) -> EvalCase:
    src = rec["src"]
    subject = rec.get("subject") or find_subject(src)
    return EvalCase(
        case_id=str(rec.get("case_id", rec.get("id", n))),
        prompt=src,
        subject=subject,
        target_new=_one(rec["alt"]),
        target_true=_one(rec["answers"]),
        paraphrases=_strs(rec["rephrase"]),
        neighbours=tuple((p, _one(rec["loc_ans"])) for p in _strs(rec["loc"])),
    )


def _one(value: Any) -> str:
    """The first of a list of answers, or the string itself."""
    items = _strs(value)
    return items[0] if items else ""


_QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "in", "on", "the", "is"}
_WORD = re.compile(r"[^\s?]+")
_PREPOSITIONS = {"of", "by", "for", "in", "on", "to", "from", "with", "at", "does", "did", "is", "was"}


def find_subject(question: str) -> str:
    """The entity a zsRE question asks about, when the record does not name it.

    1) the longest run of capitalised (or numeric) words, not counting a leading question word;
    2) else the words after the last preposition; 3) else the question without its "?".
    """
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(question)]
    runs: list[tuple[int, int]] = []  # (start char, end char)
    start = end = None
    for i, (w, s, e) in enumerate(words):
        capital = w[:1].isupper() or w[:1].isdigit()
        if capital and not (i == 0 and w.lower() in _QUESTION_WORDS):
            start, end = (s if start is None else start), e
        elif start is not None:
            runs.append((start, end))  # type: ignore[arg-type]
            start = end = None
    if start is not None:
        runs.append((start, end))  # type: ignore[arg-type]
    if runs:
        s, e = max(reversed(runs), key=lambda r: r[1] - r[0])  # the longest; the last on ties
        return question[s:e].rstrip(".,;:")
    for i in range(len(words) - 2, -1, -1):
        if words[i][0].lower() in _PREPOSITIONS:
            return question[words[i + 1][1]:words[-1][2]].rstrip(".,;:")
    return question.rstrip("?").strip()


def select(cases: list[EvalCase], offset: int = 0, limit: int | None = None) -> tuple[list[EvalCase], int]:
    """(the editable cases from ``offset``, at most ``limit``; how many were skipped as not editable)."""
    valid = [c for c in cases if c.valid]
    chosen = valid[offset:] if limit is None else valid[offset:offset + limit]
    return chosen, len(cases) - len(valid)
