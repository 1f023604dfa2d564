//! `hashcore`: the native core of the ingestion service.
//!
//! Pure Rust modules (no PyO3): `json` (I-JSON parser and JCS), `number`,
//! `record` (record shape, hex, SHA-256), `batch` (ingest body checks), `seal`
//! (signed seals), `chain` (the auditor's streaming check). `python` is the thin
//! PyO3 layer, built only with the `python` feature.

pub mod batch;
pub mod chain;
pub mod error;
pub mod json;
pub mod number;
pub mod record;
pub mod seal;

#[cfg(feature = "python")]
mod python;

pub use batch::{verify_batch, Batch};
pub use chain::{ChainReport, ChainVerifier, Problem};
pub use error::{BatchCode, BatchError, Error, JsonError, ProblemReason, Rule};
pub use json::canonicalize;
pub use record::RecordView;
pub use seal::{Seal, Signer};

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    record::hex_encode(&record::sha256(data))
}
