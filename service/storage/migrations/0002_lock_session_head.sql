-- The first statement of every commit, in one round trip: take the session's
-- advisory lock, check the writing key is still live, and lock the head row.
-- A function, so that the order (lock, then FOR UPDATE) is guaranteed.

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
