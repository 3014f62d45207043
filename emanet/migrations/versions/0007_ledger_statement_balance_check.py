"""ledger: check that entries balance once per INSERT statement instead of once per posting at commit

Revision ID: 0007
Revises: 0002
Create Date: 2026-11-22 05:30:00

The deferred row trigger ran a PL/pgSQL call and a join per posting (two per transfer, two hundred for a
batch of a hundred transfers). The statement trigger sees the statement's new postings as a transition
table and checks every entry they belong to in one query. It is as strict: postings are append-only, so an
entry's sum can only change by an INSERT, and every INSERT that leaves any entry it touched unbalanced,
with fewer than two postings or with a posting in another currency is refused. The ledger writes all the
postings of an entry in one statement (``emanet.ledger.service``).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = (
    "DROP TRIGGER ledger_postings_balanced ON ledger_postings",
    "DROP FUNCTION ledger_check_entry_balanced()",
    """
CREATE FUNCTION ledger_check_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- Per entry the statement touched (LATERAL): the entry by primary key, its postings from the entry_id
    -- index, each posting's account currency by primary key (a scalar subquery, which the planner cannot
    -- turn into a hash join over every account). PL/pgSQL keeps one plan per connection, made when the
    -- tables may have been nearly empty; a plain join of these tables was once planned as a merge join
    -- over every entry and got slower with each entry posted (seen in the benchmark).
    SELECT n.entry_id, s.total, s.legs, s.foreign_legs
      INTO bad
      FROM (SELECT DISTINCT entry_id FROM new_postings) AS n
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(p.amount), 0) AS total, count(*) AS legs,
                  count(*) FILTER (
                      WHERE (SELECT a.currency FROM ledger_accounts AS a WHERE a.id = p.account_id)
                            IS DISTINCT FROM e.currency) AS foreign_legs
             FROM ledger_entries AS e
             JOIN ledger_postings AS p ON p.entry_id = e.id
            WHERE e.id = n.entry_id) AS s
     WHERE s.total <> 0 OR s.legs < 2 OR s.foreign_legs > 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unbalanced ledger entry %: sum %, % postings, % in another currency',
            bad.entry_id, bad.total, bad.legs, bad.foreign_legs USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
""",
    """
CREATE TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings
    REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_entries_balanced()
""",
)

DOWNGRADE = (
    "DROP TRIGGER ledger_postings_balanced ON ledger_postings",
    "DROP FUNCTION ledger_check_entries_balanced()",
    """
CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    legs integer;
    foreign_legs integer;
BEGIN
    SELECT coalesce(sum(p.amount), 0), count(*), count(*) FILTER (WHERE a.currency <> e.currency)
      INTO total, legs, foreign_legs
      FROM ledger_postings p
      JOIN ledger_accounts a ON a.id = p.account_id
      JOIN ledger_entries e ON e.id = p.entry_id
     WHERE p.entry_id = NEW.entry_id;
    IF total <> 0 OR legs < 2 OR foreign_legs > 0 THEN
        RAISE EXCEPTION 'unbalanced ledger entry %: sum %, % postings, % in another currency',
            NEW.entry_id, total, legs, foreign_legs USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
""",
    """
CREATE CONSTRAINT TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced()
""",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DOWNGRADE:
            op.execute(statement)
