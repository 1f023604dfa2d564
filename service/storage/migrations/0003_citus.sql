-- Citus (distributed PostgreSQL): the same schema, distributed when the `citus`
-- extension is installed in this database. On plain PostgreSQL only the first
-- part (a rewrite of append_at_head that changes nothing) applies.

-- append_at_head, as in 0002, with one change: the time of the commit is read
-- once, before the statements, instead of `clock_timestamp()` inside
-- `ON CONFLICT DO UPDATE SET` (Citus refuses non-IMMUTABLE functions there).
-- `created_at`/`updated_at` are the same instant in both cases.
CREATE OR REPLACE FUNCTION append_at_head(
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
    SELECT p_tenant, p_session, r.seq, r.is_seal, r.kind, r.ts, r.hash, r.record
      FROM unnest(p_seqs, p_is_seal, p_kinds, p_ts, p_hashes, p_records)
           AS r (seq, is_seal, kind, ts, hash, record);

    v_now := clock_timestamp();
    INSERT INTO sessions AS s (tenant_id, session_id, next_seq, head_hash, last_seal_seq,
                               last_seal_hash, seal_count, first_ts, last_ts,
                               created_at, updated_at)
    VALUES (p_tenant, p_session, p_new_next_seq, p_new_head_hash, p_seal_seq, p_seal_hash, 1,
            p_first_ts, p_last_ts, v_now, v_now)
    ON CONFLICT (tenant_id, session_id) DO UPDATE
    SET next_seq = EXCLUDED.next_seq, head_hash = EXCLUDED.head_hash,
        last_seal_seq = EXCLUDED.last_seal_seq, last_seal_hash = EXCLUDED.last_seal_hash,
        seal_count = s.seal_count + 1, first_ts = coalesce(s.first_ts, EXCLUDED.first_ts),
        last_ts = EXCLUDED.last_ts, updated_at = EXCLUDED.updated_at;
    RETURN 'appended';
END
$$;

-- Distributes the schema over a Citus cluster; idempotent. Called below when
-- the extension is already installed (a new deployment on Citus); a deployment
-- that moves to Citus later calls it once after `CREATE EXTENSION citus` and
-- adding its worker nodes (it copies the existing rows to the shards).
--
-- - tenants, api_keys, signing_keys (and schema_migrations, so that a service
--   connected to a worker sees the schema is current): reference tables, a copy
--   on every node, read locally by every commit and joined with sessions;
-- - sessions and records: distributed by session_id, co-located, so one
--   session's head and records are on one shard of one worker;
-- - the commit functions: distributed by their session argument, co-located
--   with sessions, so `SELECT append_at_head(...)` and
--   `SELECT * FROM lock_session_head(...)` run on the worker holding the session,
--   as one task. `force_delegation` makes that so inside a transaction too (the
--   judged path): its advisory lock, row lock and reads are then all on that
--   worker, in the same worker transaction, like the fast path's.
CREATE FUNCTION distribute_on_citus() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database';
    END IF;
    -- Reference tables and the tables that reference them in one transaction:
    -- Citus needs the shard copies made over one connection per node. (Once
    -- tenants is a reference table, the tables referencing it are "Citus local
    -- tables" until they are distributed below: hence the checks on the kind.)
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    FOREACH t IN ARRAY ARRAY['tenants', 'api_keys', 'signing_keys', 'schema_migrations'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                        WHERE logicalrelid = t::regclass AND partmethod = 'n' AND repmodel = 't')
        THEN
            PERFORM create_reference_table(t);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'sessions'::regclass AND partmethod = 'h') THEN
        PERFORM create_distributed_table('sessions', 'session_id');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'records'::regclass AND partmethod = 'h') THEN
        PERFORM create_distributed_table('records', 'session_id', colocate_with => 'sessions');
    END IF;
    PERFORM create_distributed_function(
        'lock_session_head(integer, bigint, uuid, text)', 'p_session',
        colocate_with => 'sessions', force_delegation => true);
    PERFORM create_distributed_function(
        'append_at_head(integer, bigint, uuid, text, bigint, text, text, bigint[], boolean[],'
        ' text[], text[], text[], bytea[], bigint, text, bigint, text, text, text)', 'p_session',
        colocate_with => 'sessions', force_delegation => true);
    -- Added by a later migration (0004): distributed once it exists.
    IF to_regprocedure(
            'append_packed_at_head(integer, bigint, uuid, text, bigint, text, text, bigint,'
            ' text, text, text, bytea[], text, text, bytea, text, text, text)') IS NOT NULL THEN
        PERFORM create_distributed_function(
            'append_packed_at_head(integer, bigint, uuid, text, bigint, text, text, bigint,'
            ' text, text, text, bytea[], text, text, bytea, text, text, text)', 'p_session',
            colocate_with => 'sessions', force_delegation => true);
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM distribute_on_citus();
    END IF;
END
$$;
