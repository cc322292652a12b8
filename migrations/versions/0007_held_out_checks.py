"""edit_checks: one more kind, held_out_acc (issue 24)

The greedy answer to a phrasing the edit was not optimised on (its relation's question, plain or in
the chat template, in each form [editing] question_rows does not train on) names the new value.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_KINDS = ("kind IN ('efficacy', 'efficacy_acc', 'paraphrase', 'paraphrase_acc', 'neighbour', 'neighbour_acc', "
             "'verdict')")
NEW_KINDS = ("kind IN ('efficacy', 'efficacy_acc', 'paraphrase', 'paraphrase_acc', 'held_out_acc', 'neighbour', "
             "'neighbour_acc', 'verdict')")

# A frozen copy of kbsync/store/views.py at this revision (SQLite rebuilds edit_checks to change its
# CHECK: the views are dropped first and created again after).
VIEWS = {
    "v_fact_history": """
        SELECT t.id AS transition_id, r.subject, r.relation, r.subject_label, r.id AS request_id,
               r.target_old, r.target_old_source, r.target_new, t.from_state, t.to_state, t.reason,
               t.batch_id, t.at
        FROM request_transitions t JOIN edit_requests r ON r.id = t.request_id
    """,
    "v_batch_changes": """
        SELECT b.id AS batch_id, b.state AS batch_state, b.algorithm, b.started_at, b.finished_at,
               r.id AS request_id, r.subject, r.subject_label, r.relation,
               r.target_old, r.target_new, r.state AS request_state,
               b.version_before_id, b.version_after_id, b.delta_sha256
        FROM batches b JOIN edit_requests r ON r.batch_id = b.id
    """,
    "v_failed_edits": """
        SELECT r.id AS request_id, r.subject, r.subject_label, r.relation, r.target_new,
               r.target_old, r.state_reason AS reason, r.batch_id, r.state_changed_at AS failed_at,
               (SELECT COUNT(*) FROM edit_checks c
                 WHERE c.request_id = r.id AND c.batch_id = r.batch_id AND NOT c.passed) AS failed_checks
        FROM edit_requests r WHERE r.state = 'failed'
    """,
    "v_kb_values": """
        SELECT f.subject, f.relation, f.subject_label, f.objects, f.why, f.last_changed, f.last_seen,
               f.settling_since
        FROM kb_facts f
    """,
    "v_settling_facts": """
        SELECT f.subject, f.relation, f.subject_label, f.objects AS objects_before,
               f.settling_objects, f.settling_since
        FROM kb_facts f WHERE f.settling_since IS NOT NULL
    """,
    "v_batch_damage": """
        SELECT d.id AS damage_id, d.batch_id, b.state AS batch_state, d.subject, d.subject_label,
               d.relation, d.prompt, d.expected, d.answer, d.found_by, d.state, d.request_id,
               d.model_version_id, d.found_at, d.resolved_at
        FROM damaged_facts d JOIN batches b ON b.id = d.batch_id
    """,
    "v_gate_figures": """
        SELECT g.id AS figures_id, g.model_key, g.scope, g.batch_id, g.model_version_id, g.perplexity,
               g.known_acc, g.n_known, g.retention, g.n_retention, g.passed, g.reason, g.measured_at
        FROM gate_figures g
    """,
    "v_fact_holds": """
        SELECT h.id AS hold_id, h.subject, h.relation, h.kind, h.state, h.reason, h.request_id, h.batch_id,
               h.model_version_id, h.failures, h.not_before, h.created_at, h.resolved_at, h.resolved_reason,
               h.resolved_by
        FROM fact_holds h
    """,
}


def _kinds(condition: str) -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table("edit_checks", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_edit_checks_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_edit_checks_kind"), condition)
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def upgrade() -> None:
    _kinds(NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM edit_checks WHERE kind = 'held_out_acc'")
    _kinds(OLD_KINDS)
