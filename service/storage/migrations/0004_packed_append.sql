-- append_at_head with its small columns packed into scalars: asyncpg encodes an
-- array element by element (an isinstance check each), which was ~8 % of a
-- worker's CPU per batch. The events' seqs are contiguous from p_first_seq and
-- only the seal is a seal; kinds, timestamps and hashes (patterns without a
-- newline) are newline-joined (not hashes concatenated and cut with substr():
-- in a UTF-8 database substr() counts characters from the start, so each row
-- rescanned the whole string). The records
-- stay one bytea[]: splitting and converting them as text cost PostgreSQL more
-- than it saved (measured: 0.85 -> 1.85 ms of its CPU per batch). The seal comes
-- as its own values. Same checks, locks, order and statuses as append_at_head.
CREATE FUNCTION append_packed_at_head(
    p_ns integer, p_tenant bigint, p_session uuid, p_key_id text,
    p_next_seq bigint, p_head_hash text, p_last_seal text,
    p_first_seq bigint, p_kinds text, p_ts text, p_hashes text, p_records bytea[],
    p_seal_ts text, p_seal_hash text, p_seal_record bytea,
    p_new_head_hash text, p_first_ts text, p_last_ts text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    head record;
    v_count bigint;
    v_now timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(p_ns, hashtext(p_tenant::text || '/' || p_session::text));
    IF NOT coalesce(
            (SELECT a.revoked_at IS NULL FROM api_keys a WHERE a.key_id = p_key_id), false) THEN
        RETURN 'revoked';
    END IF;
    SELECT s.next_seq, s.head_hash, s.last_seal_hash INTO head
      FROM sessions s
     WHERE s.tenant_id = p_tenant AND s.session_id = p_session
       FOR UPDATE;
    IF FOUND THEN
        IF (head.next_seq, head.head_hash, head.last_seal_hash)
           IS DISTINCT FROM (p_next_seq, p_head_hash, p_last_seal) THEN
            RETURN 'moved';
        END IF;
    ELSIF p_next_seq <> 0 THEN
        RETURN 'moved';
    END IF;

    INSERT INTO records (tenant_id, session_id, seq, is_seal, kind, ts, hash, record)
    SELECT p_tenant, p_session, p_first_seq + r.n - 1, false, r.kind, r.ts, r.hash, r.record
      FROM unnest(p_records, string_to_array(p_kinds, E'\n'), string_to_array(p_ts, E'\n'),
                  string_to_array(p_hashes, E'\n'))
           WITH ORDINALITY AS r (record, kind, ts, hash, n);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    INSERT INTO records (tenant_id, session_id, seq, is_seal, kind, ts, hash, record)
    VALUES (p_tenant, p_session, p_first_seq + v_count - 1, true, 'CHAIN_SEAL', p_seal_ts,
            p_seal_hash, p_seal_record);

    -- The commit's time read once (Citus refuses clock_timestamp() in ON CONFLICT).
    v_now := clock_timestamp();
    INSERT INTO sessions AS s (tenant_id, session_id, next_seq, head_hash, last_seal_seq,
                               last_seal_hash, seal_count, first_ts, last_ts,
                               created_at, updated_at)
    VALUES (p_tenant, p_session, p_first_seq + v_count, p_new_head_hash,
            p_first_seq + v_count - 1, p_seal_hash, 1, p_first_ts, p_last_ts, v_now, v_now)
    ON CONFLICT (tenant_id, session_id) DO UPDATE
    SET next_seq = EXCLUDED.next_seq, head_hash = EXCLUDED.head_hash,
        last_seal_seq = EXCLUDED.last_seal_seq, last_seal_hash = EXCLUDED.last_seal_hash,
        seal_count = s.seal_count + 1, first_ts = coalesce(s.first_ts, EXCLUDED.first_ts),
        last_ts = EXCLUDED.last_ts, updated_at = EXCLUDED.updated_at;
    RETURN 'appended';
END
$$;

-- On a Citus cluster, the packed commit runs where the session is, as one task
-- (distribute_on_citus, migration 0003, distributes it once it exists).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM distribute_on_citus();
    END IF;
END
$$;
