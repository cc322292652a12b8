"""The diff's probe answered by the served model ([probe] endpoint): the fleet does the inference,
kbsync schedules it.

The same prompts and the same answer matching as the in-process probe (model/probe.py): the
greedy answer's first clause, matched against the KB object's labels and aliases. The in-process
probe's second rule (the KB label outscores the answer, teacher-forced) needs the prompt's
logprobs, which OpenAI-compatible servers do not give alike (llama.cpp's server gives none): here
agreement is the textual match alone, and the answer's own score is read from the completion's
logprobs where the server gives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kbsync.config import ProbeSettings
from kbsync.model.probe import ProbeItem, ProbeResult, answer_matches, first_clause
from kbsync.serving.endpoint import Completion, CompletionsClient


@dataclass
class ServedModel:
    identity: str                  # the configured model's key (what damage and holds are blamed on)
    client: CompletionsClient
    version_id: int | None = None  # what the server serves is not known here (probes record None)

    @classmethod
    def from_settings(cls, probe: ProbeSettings, identity: str) -> ServedModel:
        return cls(identity, CompletionsClient(probe.endpoint, model=probe.endpoint_model, concurrency=probe.concurrency,
                                               timeout_s=probe.timeout_s, max_attempts=probe.max_attempts))

    def probe(self, items: list[ProbeItem], max_new_tokens: int = 8) -> list[ProbeResult]:
        done = self.client.complete_all([it.prompt for it in items], max_new_tokens)
        return [result_of(item, c) for item, c in zip(items, done, strict=True)]


def result_of(item: ProbeItem, completion: Completion) -> ProbeResult:
    answer = first_clause(completion.text)
    labels = [lab.strip() for lab in item.acceptable if lab.strip()]
    matched = answer_matches(completion.text, labels)
    return ProbeResult(answer, matched is not None, float("-inf"), answer_logprob(answer, completion), matched)


def answer_logprob(answer: str, completion: Completion) -> float:
    """Mean log-prob of the generated tokens that spell the answer (-inf: none given, or no answer)."""
    if not answer or not completion.token_logprobs or not completion.tokens:
        return float("-inf")
    text, used = "", []
    for token, lp in zip(completion.tokens, completion.token_logprobs, strict=False):
        if len(text.strip()) >= len(answer):
            break
        text += token
        used.append(lp)
    finite = [x for x in used if math.isfinite(x)]
    return sum(finite) / len(finite) if finite else float("-inf")
