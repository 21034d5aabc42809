-- The run and file state machines, enforced by the database as witple_batch/run_state.py moves
-- them (tests/test_state_machine.py walks every pair and checks the two agree).
--
--   run:  planned -> sharded -> committed -> notified;  planned | sharded -> failed (final)
--   file: a ledger row is written once (processed | rejected | quarantined) and never changed;
--         only a quarantined row may be deleted (released, so a later plan reads the file again)
CREATE OR REPLACE FUNCTION witple_run_move_allowed(p_from text, p_to text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_from IS NOT DISTINCT FROM p_to OR (p_from, p_to) IN (
        ('planned', 'sharded'), ('planned', 'committed'), ('sharded', 'committed'),
        ('committed', 'notified'), ('planned', 'failed'), ('sharded', 'failed')
    )
$$;

-- An INSERT ... ON CONFLICT DO UPDATE fires the INSERT trigger before it finds the conflict: only
-- a run with no row yet is judged as born; an upsert onto an existing row (an older image's commit,
-- still queued during a deploy) is judged as the move its UPDATE makes.
CREATE OR REPLACE FUNCTION witple_guard_run_move() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status <> 'planned'
       AND NOT EXISTS (SELECT 1 FROM batch_runs WHERE batch_id = NEW.batch_id) THEN
        RAISE EXCEPTION 'run %: a run is born planned, not %', NEW.batch_id, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND NOT witple_run_move_allowed(OLD.status, NEW.status) THEN
        RAISE EXCEPTION 'run %: % -> % is not a move of the run state machine', NEW.batch_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS batch_runs_moves ON batch_runs;
CREATE TRIGGER batch_runs_moves BEFORE INSERT OR UPDATE OF status ON batch_runs
    FOR EACH ROW EXECUTE FUNCTION witple_guard_run_move();

CREATE OR REPLACE FUNCTION witple_guard_ledger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.status = 'quarantined' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'file %: a ledger row (%) is written once; only a quarantined file is released', OLD.key, OLD.status
        USING ERRCODE = 'check_violation';
END $$;
DROP TRIGGER IF EXISTS processed_files_once ON processed_files;
CREATE TRIGGER processed_files_once BEFORE UPDATE OR DELETE ON processed_files
    FOR EACH ROW EXECUTE FUNCTION witple_guard_ledger();

-- Every run is planned in the database before anything runs, so failing one that is not there
-- records nothing (it used to insert a failed row for runs planned without the ledger).
CREATE OR REPLACE FUNCTION witple_fail_run(p_batch_id text, p_error text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE batch_runs SET status = 'failed', failed_at = now(), finished_at = now(),
           error = left(p_error, 4000), updated_at = now()
     WHERE batch_id = p_batch_id AND status IN ('planned', 'sharded');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM file_claims WHERE batch_id = p_batch_id;  -- its files can be planned again
    RETURN true;
END $$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION witple_fail_run(text, text) SET search_path = %s',
                   format('pg_catalog, %I, pg_temp', current_schema()));
END $$;
