"""Layered configuration: defaults → file → environment → flags; bad input is one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbsync.config import load_settings, mask_url
from kbsync.errors import ConfigError


def test_defaults_are_the_embedded_ones() -> None:
    s = load_settings(environ={})
    assert s.model.path == "builtin:smollm2-135m"
    assert s.kb.source == "rdf"
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("kbsync.db")


def test_file_then_environment_override(tmp_path: Path) -> None:
    f = tmp_path / "kbsync.toml"
    f.write_text('[editing]\nbatch_size = 10\nalgorithm = "alphaedit"\n[kb]\nsubjects = ["Q142"]\n')
    s = load_settings(f, environ={"KBSYNC_EDITING__BATCH_SIZE": "20", "KBSYNC_KB__SUBJECTS": '["Q90", "Q64"]'})
    assert s.editing.batch_size == 20
    assert s.editing.algorithm == "alphaedit"
    assert s.kb.subjects == ["Q90", "Q64"]
    assert s.source_file == f


def test_config_path_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "other.toml"
    f.write_text('[state]\ndir = "/tmp/somewhere"\n')
    assert load_settings(environ={"KBSYNC_CONFIG": str(f)}).state.dir == Path("/tmp/somewhere")


def test_systemd_state_directory_is_the_default_state_dir() -> None:
    assert load_settings(environ={"STATE_DIRECTORY": "/var/lib/kbsync"}).state.dir == Path("/var/lib/kbsync")


def test_bad_file_gives_one_line_per_problem(tmp_path: Path) -> None:
    f = tmp_path / "kbsync.toml"
    f.write_text('[editing]\nbatch_size = "many"\nalgoritm = "memit"\n[schedule]\ncron = "daily"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert any("[editing.batch_size]" in line and "integer" in line for line in lines)
    assert any("[editing.algoritm] unknown setting" in line for line in lines)
    assert any("[schedule.cron]" in line and "five fields" in line for line in lines)


def test_unparsable_toml_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "kbsync.toml"
    f.write_text("[editing\nbatch_size = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_settings(f, environ={})
    assert len(str(info.value).splitlines()) == 1


def test_missing_config_file_named() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/kbsync.toml", environ={})


def test_secrets_masked() -> None:
    assert mask_url("postgresql+psycopg://kb:s3cret@db:5432/kb") == "postgresql+psycopg://kb:***@db:5432/kb"
    s = load_settings(environ={"KBSYNC_DATABASE__URL": "postgresql+psycopg://kb:s3cret@db/kb"})
    assert "s3cret" not in str(s.masked())


def test_kb_time_settings(tmp_path: Path) -> None:
    s = load_settings(environ={})
    assert (s.kb.mode, s.kb.as_of, s.kb.settle_s, s.kb.max_label_chars) == ("statements", "", 0, 250)
    s = load_settings(environ={"KBSYNC_KB__AS_OF": "2025-06-01", "KBSYNC_KB__SETTLE_S": "86400"})
    assert (s.kb.as_of, s.kb.settle_s) == ("2025-06-01", 86400)
    f = tmp_path / "kbsync.toml"
    f.write_text("[kb]\nas_of = 2025-06-01T12:00:00Z\n")  # a TOML date-time
    assert load_settings(f, environ={}).kb.as_of == "2025-06-01T12:00:00+00:00"
    f.write_text('[kb]\nas_of = "last tuesday"\n')
    with pytest.raises(ConfigError, match=r"\[kb.as_of\].*ISO 8601"):
        load_settings(f, environ={})


def test_editing_settings_reach_the_hyper_parameters() -> None:
    """-1 keeps the family default; 0 paraphrase templates is a real choice (the edit without paraphrase rows)."""
    from types import SimpleNamespace

    from kbsync.editing.configured import hyper_parameters

    smollm2 = SimpleNamespace(adapter=SimpleNamespace(family="llama", n_layers=30))
    default = hyper_parameters(load_settings(environ={}), smollm2)  # type: ignore[arg-type]
    assert (default.n_prefixes, default.paraphrase_templates) == (3, 1)
    assert default.edit_memory == 1.0 and default.preserved_weight == 1.0  # MEMIT keeps earlier batches' keys
    env = {"KBSYNC_EDITING__PARAPHRASE_TEMPLATES": "0", "KBSYNC_EDITING__N_PREFIXES": "5",
           "KBSYNC_EDITING__EDIT_MEMORY": "2.5"}
    chosen = hyper_parameters(load_settings(environ=env), smollm2)  # type: ignore[arg-type]
    assert (chosen.n_prefixes, chosen.paraphrase_templates) == (5, 0)
    assert chosen.edit_memory == 2.5 and chosen.preserved_weight == 2.5
    plain = hyper_parameters(load_settings(environ={"KBSYNC_EDITING__EDIT_MEMORY": "0"}), smollm2)  # type: ignore[arg-type]
    assert plain.preserved_weight == 0.0  # plain MEMIT: each batch solved on its own
    assert plain.replace(algorithm="alphaedit").preserved_weight == 1.0  # AlphaEdit always keeps them
    with pytest.raises(ConfigError, match="paraphrase_templates"):
        load_settings(environ={"KBSYNC_EDITING__PARAPHRASE_TEMPLATES": "-2"})
