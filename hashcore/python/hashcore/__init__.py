"""Native core of the ingestion service: I-JSON parsing, RFC 8785 (JCS),
hash-chain checks of ingest batches, signed seals, and the auditor's chain check.

See PROTOCOL.md §1-§4 and §6 for the rules these functions enforce.
"""

from hashcore._hashcore import (
    BATCH_ERROR_CODES,
    CHAIN_PROBLEM_REASONS,
    Batch,
    BatchError,
    ChainReport,
    ChainVerifier,
    JsonRuleError,
    Problem,
    Seal,
    Signer,
    canonicalize,
    sha256_hex,
    verify_batch,
    verify_chain,
)

__all__ = [
    "BATCH_ERROR_CODES",
    "CHAIN_PROBLEM_REASONS",
    "Batch",
    "BatchError",
    "ChainReport",
    "ChainVerifier",
    "JsonRuleError",
    "Problem",
    "Seal",
    "Signer",
    "canonicalize",
    "sha256_hex",
    "verify_batch",
    "verify_chain",
]
