"""The run and file state machines: the Python table of moves, the database's guard and the code agree.

Every pair of run states is walked in the database (a row brought to the first state by allowed
moves, then moved to the second); the database refuses exactly the moves run_state.RUN_MOVES does
not list. The ledger is written once. And no module but run_state (and the migrations) spells a
status: a new status literal elsewhere fails here.
"""

from __future__ import annotations

import io
import re
import tokenize
from itertools import product
from pathlib import Path

import psycopg
import pytest

from witple_batch import run_state
from witple_batch.run_state import LEDGER, FileStatus, Notice, RunStatus, WebhookOutcome
from witple_batch.schema import migrate

REPO = Path(__file__).resolve().parents[1]
# how a row reaches each state from planned, by allowed moves only
PATH = {
    RunStatus.PLANNED: [],
    RunStatus.SHARDED: [RunStatus.SHARDED],
    RunStatus.COMMITTED: [RunStatus.COMMITTED],
    RunStatus.NOTIFIED: [RunStatus.COMMITTED, RunStatus.NOTIFIED],
    RunStatus.FAILED: [RunStatus.FAILED],
}


@pytest.fixture
def migrated(database_url: str):
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        yield conn


def _run_in(conn: psycopg.Connection, run_id: str, state: RunStatus) -> None:
    conn.execute("INSERT INTO batch_runs (batch_id, status) VALUES (%s, %s)", (run_id, RunStatus.PLANNED.value))
    for step in PATH[state]:
        conn.execute("UPDATE batch_runs SET status = %s WHERE batch_id = %s", (step.value, run_id))


def test_the_python_moves_and_the_databases_guard_agree_on_every_pair(migrated):
    assert set(PATH) == set(RunStatus)
    for n, (source, target) in enumerate(product(RunStatus, RunStatus)):
        allowed = source == target or run_state.may_move(source, target)
        in_sql = migrated.execute("SELECT witple_run_move_allowed(%s, %s)", (source.value, target.value)).fetchone()
        assert in_sql == (allowed,), (source, target)
        run_id = f"walk-{n}"
        _run_in(migrated, run_id, source)
        try:
            with migrated.transaction():
                migrated.execute("UPDATE batch_runs SET status = %s WHERE batch_id = %s", (target.value, run_id))
            moved = True
        except psycopg.errors.CheckViolation as exc:
            assert f"{source.value} -> {target.value} is not a move" in str(exc)
            moved = False
        assert moved == allowed, (source, target)


def test_a_run_is_born_planned(migrated):
    for status in RunStatus:
        if status is RunStatus.PLANNED:
            continue
        with pytest.raises(psycopg.errors.CheckViolation, match="a run is born planned"):
            migrated.execute("INSERT INTO batch_runs (batch_id, status) VALUES (%s, %s)", (f"born-{status}", status))


# an older image's run_state.commit (still queued during a deploy): an upsert onto the planned row
OLD_COMMIT = (
    "INSERT INTO batch_runs (batch_id, status) VALUES (%(run)s, %(to)s)"
    " ON CONFLICT (batch_id) DO UPDATE SET status = %(to)s, updated_at = now()"
)


def test_an_upsert_onto_a_run_is_judged_by_its_move_and_a_new_row_is_still_born_planned(migrated):
    """INSERT ... ON CONFLICT DO UPDATE fires the INSERT trigger before the conflict: a run that has
    a row is held to the move the UPDATE makes, only a run without one to being born planned."""
    committed = RunStatus.COMMITTED.value
    for source in RunStatus:
        run_id = f"upsert-{source}"
        _run_in(migrated, run_id, source)
        if run_state.may_move(source, RunStatus.COMMITTED) or source is RunStatus.COMMITTED:
            migrated.execute(OLD_COMMIT, {"run": run_id, "to": committed})
            assert run_state.get(migrated, run_id).status is RunStatus.COMMITTED  # type: ignore[union-attr]
        else:
            with pytest.raises(psycopg.errors.CheckViolation, match=f"{source.value} -> {committed} is not a move"):
                migrated.execute(OLD_COMMIT, {"run": run_id, "to": committed})
    with pytest.raises(psycopg.errors.CheckViolation, match="a run is born planned"):
        migrated.execute(OLD_COMMIT, {"run": "never-planned", "to": committed})
    assert run_state.get(migrated, "never-planned") is None


@pytest.mark.parametrize("source", list(RunStatus))
def test_each_move_function_moves_exactly_from_the_states_that_allow_it(migrated, source):
    """The guard functions themselves, from every state: a move the table lists happens, any other
    changes nothing and says so (False), whatever the caller asked."""
    moves = {
        RunStatus.SHARDED: lambda run_id: run_state.mark_sharded(migrated, run_id),
        RunStatus.FAILED: lambda run_id: run_state.fail(migrated, run_id, "boom"),
        RunStatus.NOTIFIED: lambda run_id: run_state.record_notice(
            migrated, run_id, Notice.SUCCEEDED, WebhookOutcome.DELIVERED, 1, None
        ),
    }
    for target, move in moves.items():
        run_id = f"fn-{source}-{target}"
        _run_in(migrated, run_id, source)
        move(run_id)
        after = run_state.get(migrated, run_id)
        assert after is not None
        assert after.status is (target if run_state.may_move(source, target) else source), (source, target)


def test_commit_moves_only_a_live_run_and_writes_the_ledger_once(migrated):
    migrated.execute(
        "CREATE TEMP TABLE stage_files (key text, etag text, size bigint, status text, reason text, records bigint,"
        " accepted bigint, rejected bigint, rejects_by_reason jsonb, envelope_batch_id text)"
    )
    migrated.execute(
        "INSERT INTO stage_files VALUES ('a', 'e', 1, %s, NULL, 1, 1, 0, '{}', NULL),"
        " ('b', 'e', 1, %s, 'left to the next plan', 0, 0, 0, '{}', NULL)",
        (FileStatus.PROCESSED.value, FileStatus.DEFERRED.value),
    )
    for source in RunStatus:
        run_id = f"commit-{source}"
        _run_in(migrated, run_id, source)
        migrated.execute("DELETE FROM processed_files WHERE status = %s", (FileStatus.QUARANTINED.value,))
        if run_state.may_move(source, RunStatus.COMMITTED):
            with migrated.transaction():
                assert run_state.commit(migrated, run_id, 0.0, {}, {}) in (0, 1)
            assert run_state.get(migrated, run_id).status is RunStatus.COMMITTED  # type: ignore[union-attr]
        else:
            with pytest.raises(run_state.RunFailed), migrated.transaction():
                run_state.commit(migrated, run_id, 0.0, {}, {})
    keys = migrated.execute("SELECT key, status FROM processed_files").fetchall()
    assert keys == [("a", FileStatus.PROCESSED.value)]  # deferred files get no ledger row


def test_the_ledger_is_written_once_and_only_a_quarantined_file_is_released(migrated):
    constraint = migrated.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'processed_files_status_check'"
    ).fetchone()[0]
    assert set(re.findall(r"'(\w+)'", constraint)) == {status.value for status in LEDGER}
    for status in LEDGER:
        migrated.execute(
            "INSERT INTO processed_files (key, etag, size, batch_id, status) VALUES (%s, 'e', 1, 'r', %s)",
            (f"file-{status}", status.value),
        )
        with pytest.raises(psycopg.errors.CheckViolation, match="written once"):
            migrated.execute(
                "UPDATE processed_files SET status = %s WHERE key = %s", (FileStatus.REJECTED.value, f"file-{status}")
            )
        released = run_state.release(migrated, f"file-{status}")
        assert released == (status is FileStatus.QUARANTINED)
        if status is not FileStatus.QUARANTINED:
            with pytest.raises(psycopg.errors.CheckViolation, match="written once"):
                migrated.execute("DELETE FROM processed_files WHERE key = %s", (f"file-{status}",))


STATUS_WORDS = {s.value for s in (*RunStatus, *FileStatus, *Notice, *WebhookOutcome)}
QUOTED_STATUS = re.compile(r"""['"](""" + "|".join(sorted(STATUS_WORDS)) + r""")['"]""")
OWNERS = {REPO / "witple_batch" / "run_state.py"}


def _status_literals(path: Path) -> list[str]:
    """String tokens that are a status or quote one (SQL inside a string); a dict key named like a
    status (a count called "rejected") is a field name, not a status."""
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    found = []
    for i, token in enumerate(tokens):
        if token.type != tokenize.STRING:
            continue
        following = next((t for t in tokens[i + 1 :] if t.type not in (tokenize.NL, tokenize.COMMENT)), None)
        if following is not None and following.string == ":":
            continue
        if QUOTED_STATUS.search(token.string):
            found.append(f"{path.relative_to(REPO)}:{token.start[0]}: {token.string[:80]}")
    return found


def test_no_module_but_run_state_spells_a_status():
    sources = (
        [
            path
            for folder in ("witple_batch", "coordinator", "shard_job", "reduce_job", "export_model", "local_stack")
            for path in sorted((REPO / folder).rglob("*.py"))
            if path not in OWNERS
        ]
        + sorted((REPO / "scripts").glob("*.py"))
        + sorted((REPO / "benchmarks").glob("*.py"))
    )
    found = [line for path in sources for line in _status_literals(path)]
    assert found == []
    # the check can fail: it finds the literals of the module that owns them
    assert _status_literals(REPO / "witple_batch" / "run_state.py")
