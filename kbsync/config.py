"""Typed, layered configuration: defaults → `kbsync.toml` → `KBSYNC_<SECTION>__<KEY>` → flags.

Every setting has a default and a help line (the Field description); `tests/test_docs.py`
checks that each one is documented in docs/reference.md. A bad file gives one line per problem,
naming the key and what is expected (ConfigError, exit code 2).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kbsync.errors import ConfigError

ENV_PREFIX = "KBSYNC_"
CONFIG_ENV = "KBSYNC_CONFIG"
DEFAULT_CONFIG_FILE = "kbsync.toml"


class Section(BaseModel):
    # inf/nan are no setting's value: `timeout_s = inf` would be stored and shown as null.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class StateSettings(Section):
    dir: Path = Field(
        Path(".kbsync"),
        description="State directory: the SQLite database, deltas, model versions and caches. "
        "Relative paths are taken from the working directory; under systemd, $STATE_DIRECTORY.",
    )
    keep_versions: int = Field(
        3, ge=1, description="How many materialised model versions to keep on disk (deltas are never pruned)."
    )


class DatabaseSettings(Section):
    url: str = Field(
        "",
        description="SQLAlchemy URL. Empty: SQLite at <state.dir>/kbsync.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db.",
    )
    busy_timeout_s: float = Field(30.0, gt=0, description="How long SQLite waits for a lock before giving up.")


class ModelSettings(Section):
    path: str = Field(
        "builtin:smollm2-135m",
        description="The base model: builtin:smollm2-135m, a local HF directory, a .gguf file, or a hub id (online only).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto = float32 on CPU, bfloat16 on CUDA."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    block: str = Field("", description="Override: transformer block module name template, e.g. model.layers.{}.")
    mlp_out: str = Field("", description="Override: edited MLP output projection template, e.g. model.layers.{}.mlp.down_proj.")
    final_norm: str = Field("", description="Override: final norm module name, e.g. model.norm.")
    unembed: str = Field("", description="Override: unembedding module name, e.g. lm_head.")
    embed: str = Field("", description="Override: token embedding module name, e.g. model.embed_tokens.")


class KbSettings(Section):
    source: Literal["rdf", "sparql", "wikidata"] = Field(
        "rdf", description="Where facts come from: local RDF files, a SPARQL endpoint, or Wikidata followed by its "
        "change stream and entity fetches (`kbsync follow`, `kbsync bootstrap --dump`).")
    files: list[str] = Field(
        default_factory=lambda: ["builtin:demo"],
        description="RDF files (Turtle, N-Triples, RDF/XML, JSON-LD, .gz) for source = rdf; builtin:demo is the shipped demo KB.",
    )
    endpoint: str = Field("https://query.wikidata.org/sparql", description="SPARQL endpoint URL for source = sparql.")
    user_agent: str = Field(
        "kbsync",
        description="User-Agent sent to the KB's servers; Wikimedia hosts (wikidata.org, ...) refuse one without "
        "a real contact, e.g. 'kbsync/0.1 (https://your.site/kbsync; you@your.site)'.",
    )
    subjects: list[str] = Field(
        default_factory=list,
        description="Entity ids to read (Q142, ...), or one selector: a relation id (every item with it) "
        "or a SPARQL WHERE fragment binding ?item. Empty: every subject in the RDF files.",
    )
    language: str = Field("en", description="Language of labels and aliases.")
    mode: Literal["truthy", "statements"] = Field(
        "statements",
        description="statements: p:/ps: statements with ranks and start/end times, only values current as of "
        "[kb] as_of; truthy: every wdt: value, ended ones included (only for KBs without history).",
    )
    as_of: str = Field(
        "", description="Decide what is current as of this ISO 8601 date or time (UTC) instead of now; "
        "for replays and tests (kbsync diff --as-of overrides it)."
    )
    settle_s: int = Field(
        0, ge=0, description="Queue a changed fact only after the KB has shown the same new value for this "
        "many seconds, counted from the first diff that saw it (0: at once)."
    )
    max_label_chars: int = Field(
        250, ge=1, description="Facts with a longer label or alias (subject or object) are skipped, logged "
        "and counted; Wikidata's own limit is 250."
    )
    timeout_s: float = Field(60.0, gt=0, description="Per-query timeout for the SPARQL endpoint.")
    max_attempts: int = Field(5, ge=1, description="Attempts per SPARQL query (429/503 honour Retry-After, else back-off).")
    page_size: int = Field(200, ge=1, description="Subjects per SPARQL query (VALUES paging).")
    overlap_s: int = Field(600, ge=0, description="Overlap window for incremental reads by schema:dateModified.")
    eventstreams_url: str = Field("https://stream.wikimedia.org/v2/stream/recentchange",
                                  description="EventStreams recentchange (SSE) URL that source = wikidata follows.")
    entity_url: str = Field("https://www.wikidata.org/wiki/Special:EntityData/{id}.json",
                            description="Entity JSON URL, {id} the item id: one entity a call (fetch = entitydata).")
    api_url: str = Field("https://www.wikidata.org/w/api.php",
                         description="MediaWiki API: wbgetentities (up to 50 items a call) and RecentChanges backfill.")
    fetch: Literal["wbgetentities", "entitydata"] = Field(
        "wbgetentities", description="How source = wikidata fetches changed items: wbgetentities at api_url (50 a "
        "call) or entity_url (one a call).")
    maxlag_s: int = Field(5, ge=0, description="maxlag sent with API calls: Wikidata answers 'maxlag' when its "
                          "replicas lag more, and kbsync waits Retry-After and retries.")
    stream_window_s: int = Field(7 * 86400, ge=60, description="How far back the change stream can resume "
                                 "(EventStreams keeps about a week): a longer gap is read from RecentChanges.")
    stream_idle_s: float = Field(10.0, gt=0, description="follow --until-caught-up stops reading the stream after "
                                 "this long without an event (or at an event from the run's start on).")
    follow_chunk: int = Field(500, ge=1, description="Changed items fetched and diffed at a time by kbsync follow.")
    rdf_engine: Literal["auto", "rdflib", "oxigraph"] = Field(
        "auto", description="RDF file reader; auto = pyoxigraph, measured faster at every size (docs/sources.md)."
    )

    @field_validator("as_of", mode="before")
    @classmethod
    def _iso_moment(cls, v: object) -> object:
        if isinstance(v, date):  # a TOML date or date-time (also what an env value parses to)
            v = v.isoformat()
        if isinstance(v, str) and v:
            parse_as_of(v)
        return v


def parse_as_of(text: str) -> datetime:
    """An ISO 8601 date or date-time ("2024-07-05", "2024-07-05T12:00:00Z") -> an aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("an ISO 8601 date or time, e.g. 2024-07-05 or 2024-07-05T12:00:00Z") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class RelationsSettings(Section):
    catalogue: str = Field("", description="Extra relation catalogue (TOML) that adds or overrides shipped entries.")
    enabled: list[str] = Field(default_factory=list, description="Relation ids to sync; empty: every catalogue relation.")


class ProbeSettings(Section):
    batch_size: int = Field(32, ge=1, description="Prompts per probe batch (halved automatically on out-of-memory).")
    max_new_tokens: int = Field(8, ge=1, description="Tokens of the model's greedy answer.")
    sample_unchanged: int = Field(
        50, ge=0, description="Unchanged facts re-probed per diff run (a rotating sample); --full probes all."
    )
    endpoint: list[str] = Field(
        default_factory=list,
        description="OpenAI-compatible /v1/completions URL(s) of the served model (one, or a list of replicas): "
        "diff asks it instead of loading the model; empty: probe in-process. Verification of a new batch stays in-process.",
    )
    endpoint_model: str = Field("", description="The `model` field sent to the endpoint (vLLM needs the served name; llama.cpp ignores it).")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once against [probe] endpoint (spread over the replicas).")
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout against [probe] endpoint.")
    max_attempts: int = Field(4, ge=1, description="Attempts per request against [probe] endpoint (back-off doubles from 0.5 s; 429/503 honour Retry-After).")

    @field_validator("endpoint", mode="before")
    @classmethod
    def _one_or_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) and v else ([] if v == "" else v)


QuestionRow = Literal["plain", "chat"]


class EditingSettings(Section):
    algorithm: Literal["memit", "alphaedit"] = Field("memit", description="Mass-editing algorithm.")
    layers: list[int] = Field(default_factory=list, description="Edited layers; empty: the measured default for the model family.")
    batch_size: int = Field(50, ge=1, description="Edits per MEMIT batch in apply.")
    v_steps: int = Field(0, ge=0, description="Adam steps for target vectors; 0: the family default.")
    v_lr: float = Field(0.0, ge=0, description="Adam learning rate for target vectors; 0: the family default.")
    cov_lambda: float = Field(0.0, ge=0, description="Covariance weight λ; 0: the family default.")
    cov_samples: int = Field(0, ge=0, description="Corpus texts for the key second moments; 0: the default "
                             "(2000 for SmolLM2-135M). A corpus with fewer texts is used whole.")
    max_batch_tokens: int = Field(
        0, ge=0, description="Memory budget of target optimisation: upper-block tokens per chunk of edits "
        "(halved on out-of-memory; about 1 MB each on SmolLM2-135M); 0: the default (2048).")
    target_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of the upper blocks' matrix products while optimising targets; auto: the family default.")
    n_prefixes: int = Field(
        -1, ge=-1, description="Model-written context prefixes each prompt is optimised in, beside the bare prompt "
        "(-1: the family default: 3 for SmolLM2-135M, else 5).")
    paraphrase_templates: int = Field(
        -1, ge=-1, description="Context templates (from the bare prompt on) each paraphrase of a request is optimised "
        "in, so the edit also holds when the question is asked in other words (-1: the family default: 1 for SmolLM2-135M, else 2; 0: none).")
    merge_same_subject: bool = Field(
        True, description="Edits of one subject in a batch share one target delta, optimised on all their rows, so "
        "that they do not pull the subject's key apart (MEMIT-Merge); false: one delta per edit.")
    question_rows: list[QuestionRow] = Field(
        default_factory=list,
        description="Rows each edit is also optimised on from its relation's catalogue question: "
        "plain (\"Who is the head of government of X? The answer is\") and chat (the question as a user's turn in "
        "the model's chat template, when it has one); [] (the default): none. They make target optimisation "
        "about 1.6x slower (both rows, SmolLM2-135M). The forms not trained on are the edit's held-out checks "
        "(held_out_acc, [verify] min_held_out_acc).")
    corpus: str = Field(
        "auto",
        description="Corpus for key statistics: auto (builtin:smollm2-samples for the bundled model, model-samples "
        "for any other), model-samples (text the model writes, offline), builtin:smollm2-samples (the bundled "
        "model's, sampled once and shipped: 512 texts), builtin:gemma3-samples (Gemma 3 270M's, likewise), a "
        ".txt/.jsonl path, or hf:<dataset> (online only).",
    )
    norm_anchor: bool = Field(
        False, description="NAS norm anchoring: rescale each solved target vector z_i to the unedited model's norm ‖h_i‖ "
        "(edits that last over many sequential batches).")
    early_stop_prob: float = Field(
        0.0, ge=0, lt=1, description="ENCORE early stopping: stop optimising an edit's target once the new value's mean "
        "per-token probability reaches this (0: off, the loss threshold only).")
    norm_constraint: float = Field(
        0.0, ge=0, description="ENCORE norm constraint: weight α of α‖ΔW‖² in the layer update (0: off).")
    edit_memory: float = Field(
        -1.0, ge=-1, description="MEMIT: weight μ of every earlier batch's keys in the layer update, "
        "ΔW = R Kᵀ (λC + μ K_p K_pᵀ + KKᵀ)⁻¹, so a new batch does not overwrite the earlier ones "
        "(-1: the default, 1; 0: off, plain MEMIT; AlphaEdit always keeps them). It changes nothing in a first batch.")
    compact_after: int = Field(
        0, ge=0, description="Compact the delta log when it holds more than this many batches: re-solve every active "
        "edit from the base weights as one delta, after apply (0: never; `kbsync compact` does it by hand).")
    compact_batch_size: int = Field(
        0, ge=0, description="Edits per mass edit when compacting ([editing] batch_size when 0); several are chained.")
    retry_smaller: bool = Field(
        True, description="When the regression gate refuses a batch, try its first half (a subject's edits kept "
        "together) from the targets already computed, the rest back in the queue; false: refuse them all.")
    retry_backoff_s: int = Field(
        3600, ge=0, description="A fact whose edit failed is not queued again until the KB value, the model version "
        "or the settings changed, and not before this many seconds, doubled with each failure of the fact in a row.")
    lease_s: int = Field(3600, ge=10, description="Lease of a claimed request; the reaper returns expired ones to pending.")
    max_attempts: int = Field(
        3, ge=1, description="Times a request may be recovered from a worker that died holding it; "
        "after that it is failed as poison, with the reason.")


class VerifySettings(Section):
    # Each threshold is per edit: an edit is verified only if its own checks reach every one above 0.
    min_efficacy_acc: float = Field(
        0.9, ge=0, le=1, description="Per edit: its greedy answer must name the new value (label or alias) "
        "(a share of its one prompt: any value above 0 requires it; 0: not checked).")
    min_paraphrase_acc: float = Field(
        0.2, ge=0, le=1, description="Per edit: share of its paraphrase prompts whose greedy answer must name the new value.")
    min_held_out_acc: float = Field(
        0.0, ge=0, le=1, description="Per edit: share of its held-out phrasings (its relation's question, in each "
        "form [editing] question_rows does not train on: plain, and in the chat template) whose greedy answer must "
        "name the new value. Always asked and recorded (held_out_acc); 0: decides nothing.")
    min_efficacy: float = Field(
        0.9, ge=0, le=1, description="Per edit: the new value must out-score the stale one on its prompt (teacher-forced).")
    min_paraphrase: float = Field(
        0.5, ge=0, le=1, description="Per edit: share of its paraphrase prompts where the new value out-scores the stale one (teacher-forced).")
    min_specificity: float = Field(
        0.8, ge=0, le=1, description="Per edit: share of its neighbour facts that must keep their answer, greedy "
        "(still naming their KB value) and teacher-forced (their value out-scoring the new one).")
    max_resolves: int = Field(
        3, ge=0, description="Re-solves of a batch without the edits that failed their own checks (each drops at "
        "least one subject's edits). A batch that still has failing edits after that many publishes nothing: those "
        "edits fail, the rest go back to the queue.")
    neighbours: int = Field(
        5, ge=0, description="Neighbour facts checked per edit (answered right; same relation, else other relations).")
    at_risk_share: float = Field(
        0.8, ge=0, le=1, description="Share of each edit's neighbours chosen at risk: same relation, subject key "
        "at the edited layers closest (cosine) to the edited subject's; the rest are random.")
    at_risk_pool: int = Field(
        200, ge=1, description="Candidate subjects per relation whose keys are computed to find the at-risk "
        "neighbours (a fixed sample when the relation has more).")
    on_damage: Literal["flag", "rollback", "requeue"] = Field(
        "flag", description="A fact answered right before a batch and wrong after it (damage): flag the batch "
        "and leave it to the operator (rollback or `kbsync retry --damage`), fail/roll back the batch, or queue "
        "the fact again as a re-edit.")


class GateSettings(Section):
    enabled: bool = Field(
        True, description="Check each batch's effect on the rest of the model (perplexity, known facts, "
        "retention of earlier edits) before its version becomes current.")
    corpus: str = Field(
        "auto", description="Held-out text for perplexity: auto (builtin:NAME-heldout beside a builtin:NAME-samples "
        "corpus, else texts of the [editing] corpus file beyond those the key statistics read, else model-written "
        "text from another seed), model-samples, builtin:name or a .txt/.jsonl path. Read once, stored with the "
        "base figures.")
    texts: int = Field(16, ge=1, description="Held-out texts the perplexity is measured on (a fixed set).")
    known_facts: int = Field(
        100, ge=0, description="Facts the model answered right (snapshot), sampled across relations once with a "
        "fixed seed, whose greedy accuracy is gated.")
    retention_sample: int = Field(50, ge=0, description="Earlier verified edits re-asked per batch (a fixed-seed sample).")
    max_perplexity_rise: float = Field(
        0.05, ge=0, description="Largest relative perplexity rise over the previous version (0.05 = +5 %).")
    max_perplexity_rise_base: float = Field(
        0.2, ge=0, description="Largest relative perplexity rise over the base model.")
    max_known_drop: float = Field(
        0.05, ge=0, le=1, description="Largest fall of known-fact accuracy from the previous version.")
    max_known_drop_base: float = Field(
        0.1, ge=0, le=1, description="Largest fall of known-fact accuracy from the base model.")
    max_retention_drop: float = Field(
        0.05, ge=0, le=1, description="Largest fall of retention (sampled earlier edits whose greedy answer still "
        "names their target) from the previous version, on the same edits.")
    min_retention: float = Field(
        0.9, ge=0, le=1, description="Floor on that retention: below it a batch that loses any of the edits the "
        "previous version still held is refused (one that loses none passes; `kbsync compact` restores them).")


DEFAULT_STEPS: tuple[Literal["diff", "follow", "apply", "verify"], ...] = ("diff", "apply")


class ScheduleSettings(Section):
    cron: str = Field("0 3 * * *", description="When the daemon runs a tick (crontab syntax, five fields).")
    timezone: str = Field("UTC", description="Time zone of the cron expression.")
    misfire_grace_s: int = Field(3600, ge=1, description="How late a missed tick may still run.")
    interval_s: int = Field(
        0, ge=0, description="Run a tick every this many seconds instead of the cron expression (0: use cron); "
        "for tests and for intervals shorter than a minute.",
    )
    steps: list[Literal["diff", "follow", "apply", "verify"]] = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        description="What a tick runs, in this order: diff (read, probe, queue), follow (source = wikidata: the "
        "change stream until caught up, then probe and queue what changed), apply (edit, verify) and/or "
        "verify (`kbsync verify --all`: re-check every applied edit for drift; drifted ones fail).",
    )
    max_edits_per_tick: int = Field(0, ge=0, description="Edits one tick applies at most (0: the whole queue).")

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("a crontab expression of five fields, e.g. '0 3 * * *'")
        return v


class MetricsSettings(Section):
    enabled: bool = Field(False, description="Serve Prometheus metrics from the daemon.")
    bind: str = Field("127.0.0.1:9464", description="host:port of the metrics endpoint.")


class DashboardSettings(Section):
    enabled: bool = Field(False, description="Serve the audit dashboard from the daemon as well (`kbsync dashboard` serves it alone).")
    bind: str = Field("127.0.0.1:8765", description="host:port of the dashboard (no host: 127.0.0.1); keep it on localhost or behind a proxy.")
    allow_remote: bool = Field(
        False, description="Allow a bind that other machines can reach (e.g. 0.0.0.0:8765); refused otherwise. "
        "`kbsync dashboard` takes --allow-remote as well.",
    )
    allow_actions: bool = Field(
        False, description="Let the daemon's dashboard roll back, re-verify and retry (also needs token); "
        "`kbsync dashboard` takes --allow-actions instead.",
    )
    tokens: dict[str, str] = Field(
        default_factory=dict, description="Named action tokens, name -> secret (at least 16 characters each): "
        "the audit records the name of the token an action presented. TOML `[dashboard.tokens]` "
        "ada = \"...\", or KBSYNC_DASHBOARD__TOKENS='{ada = \"...\"}'.",
    )
    tokens_file: str = Field(
        "", description="A TOML file of more named tokens (name = \"secret\" lines), kept out of the config; "
        "read when the dashboard starts.",
    )
    token: str = Field(
        "", description="One unnamed action token (before named tokens): the audit names it \"operator\". "
        "Empty, with no tokens: read-only. Prefer KBSYNC_DASHBOARD__TOKEN to a shared file.",
    )
    page_size: int = Field(50, ge=5, le=500, description="Rows per page of the dashboard's tables.")


class ServeSettings(Section):
    reload: Literal["none", "command", "vllm"] = Field(
        "none", description="How the serving engine learns of a promote or rollback: none, a command "
        "(run with the exported path), or vllm (its /v1/load_lora_adapter and /v1/unload_lora_adapter).",
    )
    export: Literal["gguf", "lora", "hf"] = Field(
        "lora", description="What is exported for the engine on each promote and rollback: a GGUF file, "
        "a LoRA adapter directory (PEFT + adapter.gguf), or the version's HF directory (no copy).",
    )
    export_dir: str = Field(
        "", description="Where the exports for the engine go (one per version, the older ones "
        "removed); empty: <state dir>/serve.",
    )
    command: str = Field(
        "", description="reload = command: the command line, run without a shell; {path} is the export "
        "(the base GGUF, or an empty string for an adapter, when the base is current), {version} its id.",
    )
    url: str = Field("", description="reload = vllm: the server's base URL, e.g. http://127.0.0.1:8000.")
    adapter_name: str = Field("kbsync", description="reload = vllm: the LoRA name the adapter is served under (the `model` of requests).")
    gguf_precision: Literal["f32", "f16"] = Field(
        "f32", description="Precision of the edited matrices in a GGUF export (the rest keep the base's quantisation).",
    )
    lora_max_rank: int = Field(
        0, ge=0, description="Compress a LoRA export past this rank (best rank-k, its error bound stated); 0: never, exact.",
    )
    max_attempts: int = Field(3, ge=1, description="Attempts of a reload before it is recorded failed (back-off doubles from 1 s).")
    timeout_s: float = Field(300.0, gt=0, description="How long one reload attempt (the command, or the HTTP call) may take.")
    probe_after: bool = Field(
        True, description="After a reload, ask the served model ([probe] endpoint) the batch's edits: it must "
        "say what kbsync verified.",
    )


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON lines otherwise."
    )


class Settings(Section):
    state: StateSettings = Field(default_factory=StateSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    kb: KbSettings = Field(default_factory=KbSettings)
    relations: RelationsSettings = Field(default_factory=RelationsSettings)
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    editing: EditingSettings = Field(default_factory=EditingSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    # Filled in by load_settings, not by users.
    source_file: Path | None = Field(None, exclude=True, description="The file these settings came from.")

    @property
    def state_dir(self) -> Path:
        return self.state.dir

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.state.dir / 'kbsync.db'}"

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, with passwords in URLs masked."""
        data = json.loads(self.model_dump_json(exclude={"source_file"}))
        data["database"]["url"] = mask_url(self.database_url)
        if data["dashboard"]["token"]:
            data["dashboard"]["token"] = "***"
        data["dashboard"]["tokens"] = {name: "***" for name in data["dashboard"]["tokens"]}
        return data

    def hash(self) -> str:
        import hashlib

        return hashlib.sha256(self.model_dump_json(exclude={"source_file"}).encode()).hexdigest()[:16]


def mask_url(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def iter_settings() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, help) for every setting: the source of the reference docs."""
    rows = []
    for section, field in Settings.model_fields.items():
        if section == "source_file":
            continue
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, Section)
        for key, f in model.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
            rows.append((section, key, default, f.description or ""))
    return rows


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == CONFIG_ENV:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        out.setdefault(section, {})[key] = _parse_env_value(value, _is_text(section, key))
    return out


def _is_text(section: str, key: str) -> bool:
    """Whether a setting holds text (a string or a path): its env value is taken as written."""
    model = Settings.model_fields.get(section)
    field = model.annotation.model_fields.get(key) if model and isinstance(model.annotation, type) \
        and issubclass(model.annotation, Section) else None
    return field is not None and field.annotation in (str, Path)


def _parse_env_value(value: str, text: bool = False) -> Any:
    """Lists, numbers and booleans may be given as TOML/JSON literals (`["a","b"]`, `3`); a text or
    path setting takes the value as written (`KBSYNC_STATE__DIR=2024` is the directory "2024")."""
    if text:
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(exc: ValidationError, origin: str) -> list[str]:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (see `kbsync config show` for the valid keys)"
        elif err["type"] == "literal_error":
            msg = "expected " + err["ctx"]["expected"]
        lines.append(f"{origin}: [{key}] {msg} (got {err.get('input')!r})")
    return lines


def find_config_file(explicit: str | os.PathLike[str] | None, environ: dict[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError(f"config file {path} {what}; pass an existing file to --config")
        return path
    if environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={path} names no file; fix or unset it")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Defaults, then the TOML file, then KBSYNC_<SECTION>__<KEY> variables, then `overrides`."""
    environ = dict(os.environ if environ is None else environ)
    file = find_config_file(path, environ)
    data: dict[str, Any] = {}
    origin = "defaults"
    if file is not None:
        origin = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML ({exc}); fix the syntax") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML") from exc
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read it ({exc.strerror})") from exc
    env = _env_overrides(environ)
    if env:
        origin += " + environment"
    data = _merge(_merge(data, env), overrides or {})
    if "dir" not in data.get("state", {}) and environ.get("STATE_DIRECTORY"):
        data.setdefault("state", {})["dir"] = environ["STATE_DIRECTORY"].split(":")[0]
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_problems(exc, origin))) from exc
    settings.source_file = file
    return settings

