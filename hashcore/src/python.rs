//! The PyO3 binding layer: argument conversion, GIL release, and the one
//! place where `Error` becomes a Python exception.

use std::sync::{Mutex, MutexGuard};

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::error::{BatchCode, Error, ProblemReason};
use crate::record::hex_encode;
use crate::{batch, chain, json, seal};

/// Inputs at least this large are processed with the GIL released.
const DETACH_THRESHOLD: usize = 4096;
/// How many items `verify_chain` pulls from its iterable per step.
const CHAIN_CHUNK: usize = 1024;

create_exception!(
    hashcore,
    JsonRuleError,
    PyValueError,
    "A JSON text broke a rule of PROTOCOL §2 (attributes: rule, path)."
);
create_exception!(
    hashcore,
    BatchError,
    PyValueError,
    "An ingest batch was rejected (attributes: code, index, member, detail, expected, got)."
);

/// The one conversion of crate errors into Python exceptions.
impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::attach(|py| {
            let err = match &e {
                Error::Json(j) => {
                    let err = JsonRuleError::new_err(e.to_string());
                    let v = err.value(py);
                    let set = v
                        .setattr("rule", j.rule.as_str())
                        .and_then(|()| v.setattr("path", j.path()));
                    set.err().unwrap_or(err)
                }
                Error::Batch(b) => {
                    let err = BatchError::new_err(e.to_string());
                    let v = err.value(py);
                    let set = v
                        .setattr("code", b.code.as_str())
                        .and_then(|()| v.setattr("index", b.index))
                        .and_then(|()| v.setattr("member", b.member.as_deref()))
                        .and_then(|()| v.setattr("detail", b.detail.as_str()))
                        .and_then(|()| v.setattr("expected", b.expected.as_deref()))
                        .and_then(|()| v.setattr("got", b.got.as_deref()));
                    set.err().unwrap_or(err)
                }
                Error::InvalidArgument(m) => PyValueError::new_err(m.clone()),
            };
            err
        })
    }
}

/// Runs `f` with the GIL released when the input is large enough to matter.
fn maybe_detach<T: Send>(py: Python<'_>, size: usize, f: impl FnOnce() -> T + Send) -> T {
    if size >= DETACH_THRESHOLD {
        py.detach(f)
    } else {
        f()
    }
}

#[pyfunction]
fn sha256_hex(py: Python<'_>, data: &[u8]) -> String {
    maybe_detach(py, data.len(), || crate::sha256_hex(data))
}

#[pyfunction]
fn canonicalize<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let out = maybe_detach(py, data.len(), || json::canonicalize(data)).map_err(Error::from)?;
    Ok(PyBytes::new(py, &out))
}

/// A verified ingest batch. Lists are built on first access and then shared.
#[pyclass(module = "hashcore", name = "Batch", frozen)]
struct PyBatch {
    inner: batch::Batch,
    seqs: PyOnceLock<Py<PyList>>,
    kinds: PyOnceLock<Py<PyList>>,
    ts: PyOnceLock<Py<PyList>>,
    hashes: PyOnceLock<Py<PyList>>,
    records: PyOnceLock<Py<PyList>>,
}

fn cached_list<'py, T, I>(
    py: Python<'py>,
    cell: &PyOnceLock<Py<PyList>>,
    items: I,
) -> PyResult<Bound<'py, PyList>>
where
    I: IntoIterator<Item = T>,
    T: IntoPyObject<'py>,
    I::IntoIter: ExactSizeIterator,
{
    cell.get_or_try_init(py, || PyList::new(py, items).map(Bound::unbind))
        .map(|l| l.bind(py).clone())
}

#[pymethods]
impl PyBatch {
    #[getter]
    fn session_id(&self) -> &str {
        &self.inner.session_id
    }
    #[getter]
    fn first_seq(&self) -> u64 {
        self.inner.first_seq()
    }
    #[getter]
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
    #[getter]
    fn count(&self) -> usize {
        self.inner.count()
    }
    #[getter]
    fn first_prev_hash(&self) -> &str {
        &self.inner.first_prev_hash
    }
    #[getter]
    fn last_hash(&self) -> String {
        self.inner.last_hash()
    }
    #[getter]
    fn seqs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        cached_list(py, &self.seqs, self.inner.seqs.iter().copied())
    }
    #[getter]
    fn kinds<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        cached_list(py, &self.kinds, self.inner.kinds.iter().map(String::as_str))
    }
    #[getter]
    fn ts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        cached_list(py, &self.ts, self.inner.ts.iter().map(String::as_str))
    }
    #[getter]
    fn hashes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        cached_list(
            py,
            &self.hashes,
            self.inner.hashes.iter().map(|h| hex_encode(h)),
        )
    }
    #[getter]
    fn records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        // Built lazily: a cached list costs no new bytes objects.
        cached_list(
            py,
            &self.records,
            self.inner.records().map(|r| PyBytes::new(py, r)),
        )
    }
    fn __len__(&self) -> usize {
        self.inner.count()
    }
    fn __repr__(&self) -> String {
        format!(
            "Batch(session_id={:?}, first_seq={}, last_seq={}, count={})",
            self.inner.session_id,
            self.inner.first_seq(),
            self.inner.last_seq(),
            self.inner.count()
        )
    }
}

#[pyfunction]
fn verify_batch(py: Python<'_>, body: &[u8], max_events: usize) -> PyResult<PyBatch> {
    let inner = maybe_detach(py, body.len(), || batch::verify_batch(body, max_events))?;
    Ok(PyBatch {
        inner,
        seqs: PyOnceLock::new(),
        kinds: PyOnceLock::new(),
        ts: PyOnceLock::new(),
        hashes: PyOnceLock::new(),
        records: PyOnceLock::new(),
    })
}

/// A signed seal record.
#[pyclass(module = "hashcore", name = "Seal", frozen, get_all)]
struct PySeal {
    record: Py<PyBytes>,
    hash: String,
    signature: String,
    seq: u64,
    first_seq: u64,
    ts: String,
}

#[pymethods]
impl PySeal {
    fn __repr__(&self) -> String {
        format!(
            "Seal(seq={}, first_seq={}, hash={:?})",
            self.seq, self.first_seq, self.hash
        )
    }
}

/// An Ed25519 seal signer.
#[pyclass(module = "hashcore", name = "Signer", frozen)]
struct PySigner {
    inner: seal::Signer,
}

#[pymethods]
impl PySigner {
    #[new]
    fn new(seed: &[u8]) -> PyResult<Self> {
        Ok(PySigner {
            inner: seal::Signer::from_seed(seed)?,
        })
    }

    #[staticmethod]
    fn from_pem(pem: &[u8]) -> PyResult<Self> {
        Ok(PySigner {
            inner: seal::Signer::from_pem(pem)?,
        })
    }

    fn to_pem<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let pem = self.inner.to_pem()?;
        Ok(PyBytes::new(py, pem.as_bytes()))
    }

    #[getter]
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }

    #[getter]
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.public_key())
    }

    // The Python signature is fixed by the service's API.
    #[allow(clippy::too_many_arguments)]
    fn seal(
        &self,
        py: Python<'_>,
        session_id: &str,
        seq: u64,
        first_seq: u64,
        prev_seal: &str,
        head_hash: &str,
        ts: &str,
    ) -> PyResult<PySeal> {
        let s = self
            .inner
            .seal(session_id, seq, first_seq, prev_seal, head_hash, ts)?;
        Ok(PySeal {
            record: PyBytes::new(py, &s.record).unbind(),
            hash: s.hash,
            signature: s.signature,
            seq: s.seq,
            first_seq: s.first_seq,
            ts: s.ts,
        })
    }

    fn __repr__(&self) -> String {
        format!("Signer(key_id={:?})", self.inner.key_id())
    }
}

/// The first problem found in a chain.
#[pyclass(module = "hashcore", name = "Problem", frozen, get_all)]
struct PyProblem {
    line: u64,
    seq: Option<u64>,
    kind: Option<String>,
    reason: &'static str,
    detail: String,
    expected: Option<String>,
    found: Option<String>,
}

#[pymethods]
impl PyProblem {
    fn __repr__(&self) -> String {
        format!(
            "Problem(line={}, seq={:?}, reason={:?}, detail={:?})",
            self.line, self.seq, self.reason, self.detail
        )
    }
}

/// The outcome of a chain check.
#[pyclass(module = "hashcore", name = "ChainReport", frozen, get_all)]
struct PyChainReport {
    ok: bool,
    records: u64,
    events: u64,
    seals: u64,
    keys_used: Vec<String>,
    problem: Option<Py<PyProblem>>,
}

#[pymethods]
impl PyChainReport {
    fn __repr__(&self) -> String {
        format!(
            "ChainReport(ok={}, records={}, events={}, seals={})",
            if self.ok { "True" } else { "False" },
            self.records,
            self.events,
            self.seals
        )
    }
}

fn report_to_py(py: Python<'_>, r: chain::ChainReport) -> PyResult<PyChainReport> {
    let problem = match r.problem {
        Some(p) => Some(Py::new(
            py,
            PyProblem {
                line: p.line,
                seq: p.seq,
                kind: p.kind,
                reason: p.reason.as_str(),
                detail: p.detail,
                expected: p.expected,
                found: p.found,
            },
        )?),
        None => None,
    };
    Ok(PyChainReport {
        ok: r.ok,
        records: r.records,
        events: r.events,
        seals: r.seals,
        keys_used: r.keys_used,
        problem,
    })
}

fn new_verifier(public_keys: &Bound<'_, PyAny>) -> PyResult<chain::ChainVerifier> {
    let mut keys = Vec::new();
    for item in public_keys.call_method0("items")?.try_iter()? {
        let (id, raw): (String, Vec<u8>) = item?.extract()?;
        keys.push((id, raw));
    }
    Ok(chain::ChainVerifier::new(keys)?)
}

fn as_bytes_list<'a>(items: &'a [Bound<'_, PyAny>]) -> PyResult<Vec<&'a [u8]>> {
    items
        .iter()
        .map(|i| Ok(i.cast::<PyBytes>()?.as_bytes()))
        .collect()
}

fn feed_all(py: Python<'_>, v: &mut chain::ChainVerifier, lines: &[&[u8]]) {
    let size: usize = lines.iter().map(|l| l.len()).sum();
    maybe_detach(py, size, || {
        for line in lines {
            v.feed(line);
        }
    });
}

/// The streaming auditor check of PROTOCOL §6.
#[pyclass(module = "hashcore", name = "ChainVerifier", frozen)]
struct PyChainVerifier {
    inner: Mutex<chain::ChainVerifier>,
}

impl PyChainVerifier {
    fn lock(&self) -> PyResult<MutexGuard<'_, chain::ChainVerifier>> {
        self.inner
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("ChainVerifier is in use by another thread"))
    }
}

#[pymethods]
impl PyChainVerifier {
    #[new]
    fn new(public_keys: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyChainVerifier {
            inner: Mutex::new(new_verifier(public_keys)?),
        })
    }

    fn feed(&self, py: Python<'_>, records: &Bound<'_, PyAny>) -> PyResult<()> {
        let items: Vec<Bound<'_, PyAny>> = records.try_iter()?.collect::<PyResult<_>>()?;
        let lines = as_bytes_list(&items)?;
        let mut v = self.lock()?;
        feed_all(py, &mut v, &lines);
        Ok(())
    }

    fn feed_ndjson(&self, py: Python<'_>, chunk: &[u8]) -> PyResult<()> {
        let mut v = self.lock()?;
        let v = &mut *v;
        maybe_detach(py, chunk.len(), || v.feed_ndjson(chunk));
        Ok(())
    }

    fn finish(&self, py: Python<'_>) -> PyResult<PyChainReport> {
        let report = self.lock()?.finish();
        report_to_py(py, report)
    }

    #[getter]
    fn records(&self) -> PyResult<u64> {
        Ok(self.lock()?.records())
    }
}

#[pyfunction]
fn verify_chain(
    py: Python<'_>,
    records: &Bound<'_, PyAny>,
    public_keys: &Bound<'_, PyAny>,
) -> PyResult<PyChainReport> {
    let mut v = new_verifier(public_keys)?;
    let mut it = records.try_iter()?;
    loop {
        let mut chunk = Vec::with_capacity(CHAIN_CHUNK);
        for item in it.by_ref().take(CHAIN_CHUNK) {
            chunk.push(item?);
        }
        if chunk.is_empty() {
            break;
        }
        let lines = as_bytes_list(&chunk)?;
        feed_all(py, &mut v, &lines);
    }
    report_to_py(py, v.finish())
}

#[pymodule]
fn _hashcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("JsonRuleError", py.get_type::<JsonRuleError>())?;
    m.add("BatchError", py.get_type::<BatchError>())?;
    // Every value `BatchError.code` and `Problem.reason` can take, for the service's mappings.
    m.add(
        "BATCH_ERROR_CODES",
        PyTuple::new(py, BatchCode::ALL.iter().map(|c| c.as_str()))?,
    )?;
    m.add(
        "CHAIN_PROBLEM_REASONS",
        PyTuple::new(py, ProblemReason::ALL.iter().map(|r| r.as_str()))?,
    )?;
    m.add_function(wrap_pyfunction!(sha256_hex, m)?)?;
    m.add_function(wrap_pyfunction!(canonicalize, m)?)?;
    m.add_function(wrap_pyfunction!(verify_batch, m)?)?;
    m.add_function(wrap_pyfunction!(verify_chain, m)?)?;
    m.add_class::<PyBatch>()?;
    m.add_class::<PySeal>()?;
    m.add_class::<PySigner>()?;
    m.add_class::<PyProblem>()?;
    m.add_class::<PyChainReport>()?;
    m.add_class::<PyChainVerifier>()?;
    Ok(())
}
