//! Seals (PROTOCOL §4): the server's signed record closing each appended batch.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::error::Error;
use crate::json::{self, JStr, Value, MAX_SAFE_INTEGER};
use crate::record::{self, hex_encode, SEAL_KIND};

/// `key_id`: the first 16 hex chars of SHA-256 of the raw public key.
pub fn key_id_of(public_key: &[u8; 32]) -> String {
    let mut id = hex_encode(&record::sha256(public_key));
    id.truncate(16);
    id
}

/// A seal record and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// JCS of all eight members.
    pub record: Vec<u8>,
    pub hash: String,
    pub signature: String,
    pub seq: u64,
    pub first_seq: u64,
    pub ts: String,
}

/// An Ed25519 signing key.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

impl Signer {
    /// From a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self, Error> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| invalid(format!("an Ed25519 seed is 32 bytes, got {}", seed.len())))?;
        Ok(Self::from_key(SigningKey::from_bytes(&seed)))
    }

    fn from_key(key: SigningKey) -> Self {
        let key_id = key_id_of(&key.verifying_key().to_bytes());
        Signer { key, key_id }
    }

    /// From a PKCS#8 PEM private key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(pem).map_err(|_| invalid("PEM is not UTF-8"))?;
        let key = SigningKey::from_pkcs8_pem(text)
            .map_err(|e| invalid(format!("not an Ed25519 PKCS#8 PEM private key: {e}")))?;
        Ok(Self::from_key(key))
    }

    /// PKCS#8 v1 PEM (the form OpenSSL writes), LF line endings.
    pub fn to_pem(&self) -> Result<String, Error> {
        let kp = KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        kp.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map(|z| z.as_str().to_owned())
            .map_err(|e| invalid(format!("cannot encode key: {e}")))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Builds and signs the seal of §4 for events `first_seq..=seq`.
    pub fn seal(
        &self,
        session_id: &str,
        seq: u64,
        first_seq: u64,
        prev_seal: &str,
        head_hash: &str,
        ts: &str,
    ) -> Result<Seal, Error> {
        if !record::is_uuid(session_id) {
            return Err(invalid("session_id must be a lowercase hyphenated UUID"));
        }
        if seq > MAX_SAFE_INTEGER || first_seq > seq {
            return Err(invalid("need 0 <= first_seq <= seq <= 2^53-1"));
        }
        if !record::is_lower_hex(prev_seal, 64) || !record::is_lower_hex(head_hash, 64) {
            return Err(invalid(
                "prev_seal and head_hash must be 64 lowercase hex chars",
            ));
        }
        if !record::is_ts(ts) {
            return Err(invalid("ts must be RFC 3339 UTC YYYY-MM-DDTHH:MM:SS[.f]Z"));
        }
        let s = |v: &str| Value::Str(JStr::Owned(v.to_owned()));
        let k = |v: &str| JStr::Owned(v.to_owned());
        let payload = Value::Object(vec![
            (k("first_seq"), Value::Number(first_seq as f64)),
            (k("key_id"), s(&self.key_id)),
            (k("prev_seal"), s(prev_seal)),
        ]);
        // In JCS order; `hash` and `signature` are added and sorted in below.
        let mut members = vec![
            (k("kind"), s(SEAL_KIND)),
            (k("payload"), payload),
            (k("prev_hash"), s(head_hash)),
            (k("seq"), Value::Number(seq as f64)),
            (k("session_id"), s(session_id)),
            (k("ts"), s(ts)),
        ];
        let mut hashed = Vec::with_capacity(512);
        json::write_members(&mut hashed, &members);
        let digest = record::sha256(&hashed);
        let signature = hex_encode(&self.key.sign(&digest).to_bytes());
        let hash = hex_encode(&digest);
        members.push((k("hash"), s(&hash)));
        members.push((k("signature"), s(&signature)));
        members.sort_unstable_by(|a, b| json::cmp_utf16(a.0.as_str(), b.0.as_str()));
        let mut rec = Vec::with_capacity(hashed.len() + 256);
        json::write_members(&mut rec, &members);
        Ok(Seal {
            record: rec,
            hash,
            signature,
            seq,
            first_seq,
            ts: ts.to_owned(),
        })
    }
}
