"""One requested edit: make the model complete ``prompt`` (about ``subject``) with ``target_new``."""

from __future__ import annotations

from dataclasses import dataclass

from kbsync.errors import TokenizationError
from kbsync.prompts import fill


@dataclass(frozen=True)
class EditRequest:
    prompt: str  # with the subject in it, or a template with "{}" that is filled with subject
    subject: str
    target_new: str
    target_old: str | None = None
    request_id: int | None = None
    paraphrases: tuple[str, ...] = ()  # other phrasings of the prompt (with "{}" or the subject in them)
    asked: tuple[str, ...] = ()  # the question as people ask it (subject in it): optimised on ([editing] question_rows)

    @property
    def paraphrase_texts(self) -> list[str]:
        """The paraphrases with the subject in them; one that lacks the subject is left out."""
        texts = [p.replace("{}", self.subject) for p in self.paraphrases]
        return [t for t in texts if self.subject.strip() and self.subject in t]

    @property
    def asked_texts(self) -> list[str]:
        """The asked rows that hold the subject (the key is read at its last occurrence)."""
        return [t for t in self.asked if self.subject.strip() and self.subject in t]

    @property
    def text(self) -> str:
        """The prompt with the subject in it."""
        text = fill(self.prompt, self.subject)
        if not self.subject.strip() or self.subject not in text:
            raise TokenizationError(
                f"subject {self.subject!r} does not occur in the prompt {text!r}; "
                "write the prompt with the subject in it or with a '{}' placeholder"
            )
        if not self.target_new.strip():
            raise TokenizationError(f"edit of {self.subject!r} has an empty target; give a non-empty target_new")
        return text
