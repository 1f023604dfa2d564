-- The commit's statements as functions, so that each costs one round trip and
-- the order inside (advisory lock, then the head row FOR UPDATE) is guaranteed.

-- The first statement of a full commit: take the session's advisory lock,
-- check that the writing key is still live, and lock the head row.
CREATE FUNCTION lock_session_head(p_ns integer, p_tenant bigint, p_session uuid, p_key_id text)
RETURNS TABLE (key_live boolean, head_found boolean, next_seq bigint, head_hash text,
               last_seal_hash text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_ns, hashtext(p_tenant::text || '/' || p_session::text));
    key_live := coalesce(
        (SELECT a.revoked_at IS NULL FROM api_keys a WHERE a.key_id = p_key_id), false);
    SELECT s.next_seq, s.head_hash, s.last_seal_hash
      INTO next_seq, head_hash, last_seal_hash
      FROM sessions s
     WHERE s.tenant_id = p_tenant AND s.session_id = p_session
       FOR UPDATE;
    head_found := FOUND;  -- (an OUT parameter named "found" would shadow FOUND)
    RETURN NEXT;
END
$$;

-- Appends events and their seal and moves the head, as one statement: its own
-- transaction, so one round trip in all. The seal was signed against the head
-- the caller expects; if the head has moved (another writer), nothing is written
-- and 'moved' is returned, and the caller judges the batch under the lock.
CREATE FUNCTION append_at_head(
    p_ns integer, p_tenant bigint, p_session uuid, p_key_id text,
    p_next_seq bigint, p_head_hash text, p_last_seal text,
    p_seqs bigint[], p_is_seal boolean[], p_kinds text[], p_ts text[], p_hashes text[],
    p_records bytea[],
    p_new_next_seq bigint, p_new_head_hash text, p_seal_seq bigint, p_seal_hash text,
    p_first_ts text, p_last_ts text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    head record;
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
    SELECT p_tenant, p_session, r.seq, r.is_seal, r.kind, r.ts, r.hash, r.record
      FROM unnest(p_seqs, p_is_seal, p_kinds, p_ts, p_hashes, p_records)
           AS r (seq, is_seal, kind, ts, hash, record);

    INSERT INTO sessions AS s (tenant_id, session_id, next_seq, head_hash, last_seal_seq,
                               last_seal_hash, seal_count, first_ts, last_ts)
    VALUES (p_tenant, p_session, p_new_next_seq, p_new_head_hash, p_seal_seq, p_seal_hash, 1,
            p_first_ts, p_last_ts)
    ON CONFLICT (tenant_id, session_id) DO UPDATE
    SET next_seq = EXCLUDED.next_seq, head_hash = EXCLUDED.head_hash,
        last_seal_seq = EXCLUDED.last_seal_seq, last_seal_hash = EXCLUDED.last_seal_hash,
        seal_count = s.seal_count + 1, first_ts = coalesce(s.first_ts, EXCLUDED.first_ts),
        last_ts = EXCLUDED.last_ts, updated_at = clock_timestamp();
    RETURN 'appended';
END
$$;
