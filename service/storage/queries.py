"""The SQL text of the statements on the ingest hot path, as plain constants.

Kept apart from the modules that run them so that they can be imported without
the trio-asyncio bridge (importing `trio_asyncio` patches asyncio's loop policy
process-wide, STACK_NOTES trap 5): the benchmarks' plain-asyncio baselines run
exactly these statements.
"""

# Advisory lock, API key still live, head row FOR UPDATE (migration 0002).
LOCK_SESSION_HEAD = "SELECT * FROM lock_session_head($1, $2, $3::uuid, $4)"

# The stored hashes of a session's events with from <= seq < to, in seq order.
STORED_HASHES = """SELECT hash FROM records
                   WHERE tenant_id = $1 AND session_id = $2 AND NOT is_seal
                     AND seq >= $3 AND seq < $4
                   ORDER BY seq"""

# The first seal at or after a seq: the one that covers that event.
COVERING_SEAL = """SELECT record FROM records
                   WHERE tenant_id = $1 AND session_id = $2 AND is_seal AND seq >= $3
                   ORDER BY seq LIMIT 1"""

# Events, their seal and the new head, if the head is still the one the seal
# was made against: 'appended', 'moved' (nothing written) or 'revoked'.
APPEND_AT_HEAD = """SELECT append_at_head($1, $2, $3::uuid, $4, $5, $6, $7,
                                         $8, $9, $10, $11, $12, $13,
                                         $14, $15, $16, $17, $18, $19)"""

# An API key and its tenant, by the key's id.
FIND_API_KEY = """SELECT k.key_id, k.tenant_id, t.name AS tenant, k.secret_hash, k.scopes,
                         k.created_at, k.revoked_at
                  FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                  WHERE k.key_id = $1"""
