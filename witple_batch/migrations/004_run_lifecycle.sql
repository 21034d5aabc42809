-- Every state of a run lives in batch_runs, each move one transaction (witple_batch/run_state.py
-- owns them): planned -> sharded -> committed -> notified; failed is final. A file is claimed by
-- at most one live run (file_claims, with a lease) and ends in the ledger once: processed,
-- rejected (malformed) or quarantined (over a limit, or it stopped its shard; skipped until released).
ALTER TABLE batch_runs DROP CONSTRAINT IF EXISTS batch_runs_status_check;
ALTER TABLE batch_runs ALTER COLUMN started_at DROP NOT NULL;
ALTER TABLE batch_runs
    ADD COLUMN IF NOT EXISTS planned_at       timestamptz,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,  -- a run not committed by then is abandoned
    ADD COLUMN IF NOT EXISTS failed_at        timestamptz,
    ADD COLUMN IF NOT EXISTS notified_at      timestamptz,
    ADD COLUMN IF NOT EXISTS notice           text,         -- SUCCEEDED | FAILED: the notice this run sent
    ADD COLUMN IF NOT EXISTS plan             jsonb NOT NULL DEFAULT '{}';
UPDATE batch_runs SET status = 'notified', notice = 'SUCCEEDED', notified_at = finished_at
    WHERE status = 'committed' AND webhook_status IS NOT NULL;
UPDATE batch_runs SET notice = 'FAILED' WHERE status = 'failed';  -- the earlier code sent FAILED for these
ALTER TABLE batch_runs ADD CONSTRAINT batch_runs_status_check
    CHECK (status IN ('planned', 'sharded', 'committed', 'notified', 'failed'));
CREATE INDEX IF NOT EXISTS batch_runs_live ON batch_runs (lease_expires_at) WHERE status IN ('planned', 'sharded');
CREATE INDEX IF NOT EXISTS batch_runs_owed ON batch_runs (batch_id) WHERE notice IS NULL AND status IN ('committed', 'failed');

-- A claim lives exactly as long as its run is planned or sharded: the commit and the failure of
-- a run delete its claims, and a run whose lease (batch_runs.lease_expires_at) ends is failed.
CREATE TABLE IF NOT EXISTS file_claims (
    key        text PRIMARY KEY,
    batch_id   text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS file_claims_batch ON file_claims (batch_id);

ALTER TABLE processed_files DROP CONSTRAINT IF EXISTS processed_files_status_check;
ALTER TABLE processed_files ADD CONSTRAINT processed_files_status_check
    CHECK (status IN ('processed', 'rejected', 'quarantined'));
ALTER TABLE processed_files
    ADD COLUMN IF NOT EXISTS rejects_by_reason jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS envelope_batch_id text;  -- the collection server's batch_id in the file
CREATE INDEX IF NOT EXISTS processed_files_quarantined ON processed_files (processed_at) WHERE status = 'quarantined';

-- The moves a shard child makes (it holds a read-only role): a file that stopped its attempts is
-- quarantined, a run fails, its notice is recorded. SECURITY DEFINER so a role with EXECUTE on
-- these and nothing else can make them.
CREATE OR REPLACE FUNCTION witple_quarantine_file(
    p_key text, p_etag text, p_size bigint, p_batch_id text, p_reason text
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- recorded at once, so the file stays set aside even if its run then fails
    INSERT INTO processed_files (key, etag, size, batch_id, status, reason)
    VALUES (p_key, p_etag, p_size, p_batch_id, 'quarantined', left(p_reason, 4000))
    ON CONFLICT (key) DO NOTHING;
    RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION witple_fail_run(p_batch_id text, p_error text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE batch_runs SET status = 'failed', failed_at = now(), finished_at = now(),
           error = left(p_error, 4000), updated_at = now()
     WHERE batch_id = p_batch_id AND status IN ('planned', 'sharded');
    IF FOUND THEN
        DELETE FROM file_claims WHERE batch_id = p_batch_id;  -- its files can be planned again
        RETURN true;
    END IF;
    -- a run planned without the ledger (--no-ledger) is first recorded when it fails
    INSERT INTO batch_runs (batch_id, status, failed_at, finished_at, error)
    VALUES (p_batch_id, 'failed', now(), now(), left(p_error, 4000))
    ON CONFLICT (batch_id) DO NOTHING;
    RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION witple_record_notice(
    p_batch_id text, p_notice text, p_webhook_status text, p_attempts integer, p_error text
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- notices follow states: SUCCEEDED only from committed, FAILED only from failed, each once
    UPDATE batch_runs SET
           status = CASE WHEN p_notice = 'SUCCEEDED' THEN 'notified' ELSE status END,
           notice = p_notice, webhook_status = p_webhook_status,
           webhook_attempts = coalesce(webhook_attempts, 0) + p_attempts, webhook_error = left(p_error, 4000),
           notified_at = now(), finished_at = coalesce(finished_at, now()), updated_at = now()
     WHERE batch_id = p_batch_id AND notice IS NULL
       AND ((p_notice = 'SUCCEEDED' AND status = 'committed') OR (p_notice = 'FAILED' AND status = 'failed'));
    RETURN FOUND;
END $$;
