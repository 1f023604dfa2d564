-- Several sessions' fast-path commits in one statement: one transaction and one
-- WAL flush for the group instead of one per batch. Each batch is
-- append_packed_at_head (migration 0004: same checks, locks and statuses) in a
-- subtransaction of its own, so a batch whose write raises writes nothing and
-- fails nothing else: its status is 'failed <SQLSTATE> <message>'. The sessions
-- are locked in one fixed order (their advisory lock id, then tenant and
-- session), so groups running at the same time never wait on each other in a
-- cycle; a batch that found its head 'moved' keeps the session locked until the
-- group ends, and is judged afterwards in a transaction of its own.
--
-- Arguments: append_packed_at_head's, one array per column (one element per
-- batch, each of a different session), except the records: all the batches'
-- in one array, and p_starts, where each batch's begin (1-based).
CREATE FUNCTION append_packed_group(
    p_ns integer, p_tenants bigint[], p_sessions uuid[], p_key_ids text[],
    p_next_seqs bigint[], p_head_hashes text[], p_last_seals text[],
    p_first_seqs bigint[], p_kinds text[], p_ts text[], p_hashes text[],
    p_starts integer[], p_records bytea[],
    p_seal_ts text[], p_seal_hashes text[], p_seal_records bytea[],
    p_new_head_hashes text[], p_first_ts text[], p_last_ts text[])
RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_status text[] := array_fill(NULL::text, ARRAY[cardinality(p_sessions)]);
    v_end integer;
    i integer;
BEGIN
    FOR i IN
        SELECT o.i FROM generate_subscripts(p_sessions, 1) AS o(i)
         ORDER BY hashtext(p_tenants[o.i]::text || '/' || p_sessions[o.i]::text),
                  p_tenants[o.i], p_sessions[o.i]
    LOOP
        v_end := coalesce(p_starts[i + 1], cardinality(p_records) + 1) - 1;
        BEGIN
            v_status[i] := append_packed_at_head(
                p_ns, p_tenants[i], p_sessions[i], p_key_ids[i],
                p_next_seqs[i], p_head_hashes[i], p_last_seals[i],
                p_first_seqs[i], p_kinds[i], p_ts[i], p_hashes[i],
                p_records[p_starts[i]:v_end],
                p_seal_ts[i], p_seal_hashes[i], p_seal_records[i],
                p_new_head_hashes[i], p_first_ts[i], p_last_ts[i]);
        EXCEPTION WHEN OTHERS THEN
            v_status[i] := 'failed ' || SQLSTATE || ' ' || SQLERRM;
        END;
    END LOOP;
    RETURN v_status;
END
$$;
