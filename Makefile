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

.PHONY: venv run test lint bench lock clean fuzz soak demo cluster cluster-stop test-cluster

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
	$(BIN)/ruff check service sdk tests bench soak examples
	$(BIN)/ruff format --check service sdk tests bench soak examples
	$(BIN)/mypy --strict service sdk/src tests bench soak examples
	$(BIN)/python -m mypy.stubtest hashcore
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

test: lint
	cargo test --workspace --quiet
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory test-cluster

# A local Citus cluster: a coordinator and 2 workers on 127.0.0.1 (PostgreSQL 15
# from Debian, Citus built once from vendor/citus/; root for apt-get and install).
# Prints DATABASE_URL=... last; `make cluster-stop` stops it, its data stays.
cluster:
	@bash vendor/citus/cluster.sh start

cluster-stop:
	@bash vendor/citus/cluster.sh stop

# The storage-facing suites again on the cluster (started for them if it was not
# running, and then stopped again).
CLUSTER_TESTS := tests/citus tests/test_ingest.py tests/test_replay.py tests/test_race.py \
                 tests/test_sessions_api.py tests/test_evidence.py tests/test_tenancy.py
test-cluster: venv
	bash vendor/citus/cluster.sh with $(BIN)/pytest -q -p no:cacheprovider $(CLUSTER_TESTS)

# The golden path, shown: the service on the embedded PostgreSQL (or DATABASE_URL),
# a LangChain agent recording through the SDK, what the database holds, replay,
# offline verification, a tampered batch refused; exits 0 only if all of it held.
demo: venv
	$(BIN)/python examples/run_demo.py

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

# Every benchmark, on purpose (never in `make test`); figures to bench/results/*.json,
# plots to docs/bench/*.png.
bench: venv
	$(BIN)/python bench/hashcore_bench.py
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/replay_bench.py
	$(BIN)/python bench/latency_bench.py
	$(BIN)/python bench/scale_bench.py
	$(BIN)/python bench/sdk_bench.py
	$(BIN)/python bench/memory_bench.py
	bash vendor/citus/cluster.sh with $(BIN)/python bench/citus_bench.py
	$(BIN)/python bench/page_cache_bench.py
	$(BIN)/python bench/statement_bench.py

lock:
	$(BIN)/python -m pip freeze --exclude-editable --exclude hashcore --exclude agent-chain > requirements.lock

clean:
	rm -rf $(VENV) target .pytest_cache .mypy_cache .ruff_cache
