# Two commands: `make run` (set up, index if needed, serve) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install index lint bench browser clean

run: install index
	$(BIN)/rag serve --host $(HOST) --port $(PORT)

test: install browser lint
	$(BIN)/pytest -q

install: $(STAMP)

# torch first, pinned: the CPU build is on disk here; an unpinned torch pulls a CUDA build.
# constraints.txt pins every package to the versions the shipped answer model was fitted
# with: its weights depend on the embedder's and the parsers' arithmetic.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Build when the index is missing, or was built from other corpus files, settings or an
# older format; otherwise it says the index is up to date and does nothing.
index: install
	$(BIN)/rag index --if-needed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Debian's Chromium drives the browser tests (never `playwright install`).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

bench: install index
	$(BIN)/python -m benchmarks

clean:
	rm -rf index index.builds .pytest_cache test-artifacts
