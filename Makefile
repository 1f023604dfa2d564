# Every target works on a fresh machine with Python >= 3.11, a Rust toolchain and
# the package registries. All are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
export PYO3_PYTHON := $(BIN)/python

HASHCORE_SRC := $(shell find hashcore/src hashcore/python -type f 2>/dev/null) \
                hashcore/Cargo.toml hashcore/pyproject.toml Cargo.toml Cargo.lock

.PHONY: venv run test lint bench lock clean fuzz soak

venv: $(VENV)/.deps $(VENV)/.hashcore

# The service and the client SDK (agent_chain, with its LangChain and OTel
# extras), editable; every dependency pinned in requirements.lock.
$(VENV)/.deps: requirements.lock pyproject.toml sdk/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e . -e './sdk[langchain,otel]'
	touch $@

# hashcore is built in release mode straight into the venv.
$(VENV)/.hashcore: $(VENV)/.deps $(HASHCORE_SRC)
	cd hashcore && VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --quiet
	touch $@

run: venv
	$(BIN)/python -m service serve --host $(HOST) --port $(PORT)

lint: venv
	$(BIN)/ruff check service sdk tests bench soak
	$(BIN)/ruff format --check service sdk tests bench soak
	$(BIN)/mypy --strict service sdk/src tests bench soak
	$(BIN)/python -m mypy.stubtest hashcore
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

test: lint
	cargo test --workspace --quiet
	$(BIN)/pytest -q

# tests/test_openapi_conformance.py (part of `make test`: schemathesis against
# /openapi.json, every check) with many more examples: a few minutes.
FUZZ_EXAMPLES ?= 300
FUZZ_SEED     ?= 20261130
fuzz: venv
	CHAIN_CONFORMANCE_EXAMPLES=$(FUZZ_EXAMPLES) CHAIN_CONFORMANCE_SEED=$(FUZZ_SEED) \
	CHAIN_CONFORMANCE_STATEFUL_STEPS=20 \
	$(BIN)/pytest -q -p no:cacheprovider --timeout 1800 tests/test_openapi_conformance.py

# The fault soak (not part of `make test`): writers through `serve --workers 2`
# while workers, the server and PostgreSQL are killed, restarted and frozen;
# then an independent check that nothing acknowledged was lost. Bounded in time.
soak: venv
	$(BIN)/python -m soak

bench: venv
	$(BIN)/python bench/hashcore_bench.py
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/replay_bench.py

lock:
	$(BIN)/python -m pip freeze --exclude-editable --exclude hashcore --exclude agent-chain > requirements.lock

clean:
	rm -rf $(VENV) target .pytest_cache .mypy_cache .ruff_cache
