-- Tenants, their API keys, the server's signing keys, sessions and records.

CREATE TABLE tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A key is "<prefix>_<key_id>_<secret>"; only SHA-256(secret) is stored.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes       text[] NOT NULL CHECK (scopes <@ ARRAY['ingest', 'read'] AND cardinality(scopes) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- Public halves of every key that ever signed a seal: retired keys stay, so
-- old seals stay verifiable.
CREATE TABLE signing_keys (
    key_id      text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    alg         text NOT NULL DEFAULT 'Ed25519' CHECK (alg = 'Ed25519'),
    public_key  bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

CREATE TYPE record_status AS ENUM ('AUTHORITATIVE');

-- One row per session: its chain head, locked FOR UPDATE by every commit.
CREATE TABLE sessions (
    tenant_id       bigint NOT NULL REFERENCES tenants (id),
    session_id      uuid NOT NULL,
    next_seq        bigint NOT NULL DEFAULT 0 CHECK (next_seq >= 0),
    head_hash       text NOT NULL DEFAULT repeat('0', 64),
    last_seal_seq   bigint,
    last_seal_hash  text NOT NULL DEFAULT repeat('0', 64),
    seal_count      bigint NOT NULL DEFAULT 0,
    first_ts        text,
    last_ts         text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, session_id)
);
-- Keyset pagination, newest first.
CREATE INDEX sessions_newest ON sessions (tenant_id, created_at DESC, session_id DESC);

-- Events and seals, each with the exact canonical bytes that were hashed.
-- The primary key orders replay: by seq, the event (false) before its seal (true).
-- No foreign key to sessions: the only writer is the commit that holds the
-- session's row lock, and a per-row FK check would cost a lookup per event.
CREATE TABLE records (
    tenant_id   bigint NOT NULL,
    session_id  uuid NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 0),
    is_seal     boolean NOT NULL,
    kind        text NOT NULL,
    ts          text NOT NULL,
    hash        text NOT NULL,
    record      bytea NOT NULL,
    status      record_status NOT NULL DEFAULT 'AUTHORITATIVE',
    PRIMARY KEY (tenant_id, session_id, seq, is_seal)
);
