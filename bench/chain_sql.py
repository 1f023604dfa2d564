"""The service's commit SQL, read from service/storage/chains.py without importing it.

Importing `service.storage.chains` would import `trio_asyncio`, which patches
asyncio's loop policy process-wide (STACK_NOTES trap 5); the baselines run on
plain asyncio, so they take the module-level string constants from its source.
"""

from __future__ import annotations

import ast
from pathlib import Path

CHAINS = Path(__file__).resolve().parents[1] / "service" / "storage" / "chains.py"
LOCKS = Path(__file__).resolve().parents[1] / "service" / "storage" / "locks.py"


def _constants(path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
        ):
            out[node.targets[0].id] = node.value.value
    return out


_SQL = _constants(CHAINS)
_NS = _constants(LOCKS)


def _str(name: str) -> str:
    value = _SQL[name]
    assert isinstance(value, str), name
    return value


LOCK_HEAD = _str("_LOCK_HEAD")
APPEND_AT_HEAD = _str("_APPEND_AT_HEAD")
SESSION_HEAD = _NS["SESSION_HEAD"]
assert isinstance(SESSION_HEAD, int)

# As service/storage/tenants.py `find_key` (copied: that module imports trio_asyncio).
FIND_KEY = """SELECT k.key_id, k.tenant_id, t.name AS tenant, k.secret_hash, k.scopes,
                     k.created_at, k.revoked_at
              FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
              WHERE k.key_id = $1"""
