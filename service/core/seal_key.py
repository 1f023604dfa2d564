"""The server's Ed25519 seal key: loaded from SEAL_KEY_FILE, or created once (0600).

The private half never leaves this module's file handling and is never logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hashcore

log = logging.getLogger(__name__)


def load(path: Path) -> hashcore.Signer:
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning(
            "seal key file %s is readable by others (mode %o): chmod 600 it", path, mode & 0o777
        )
    return hashcore.Signer.from_pem(path.read_bytes())


def load_or_create(path: Path) -> hashcore.Signer:
    """Load the key at `path`, creating it atomically if it does not exist."""
    try:
        return load(path)
    except FileNotFoundError:
        pass
    signer = hashcore.Signer(os.urandom(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting together must not both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(path)
    with os.fdopen(fd, "wb") as out:
        out.write(signer.to_pem())
        out.flush()
        os.fsync(out.fileno())
    return signer


def rotate(path: Path) -> tuple[hashcore.Signer, Path | None]:
    """Replace the key at `path` with a new one; the old file is kept beside it."""
    kept: Path | None = None
    if path.exists():
        old = load(path)
        kept = path.with_name(f"{path.stem}.{old.key_id}.retired{path.suffix}")
        os.replace(path, kept)
    return load_or_create(path), kept
