"""Prompt templates: one "{}" that the subject's label fills (relations.toml, edit requests)."""

from __future__ import annotations


def fill(template: str, subject: str) -> str:
    """The template with every "{}" replaced by the subject; other braces stay as they are."""
    return template.replace("{}", subject)
