# The two commands a new machine needs (see README, "Contributors"):
#   make demo   launch the sample job and follow its log through an auto-started daemon
#   make test   every check CI runs: format, lint, types, buf, stale generated code, tests
# and, while editing, `make test-fast`: the unit tests and the end-to-end tests not marked slow.
# Everything they install is locked: Python packages by requirements/dev.lock (hashes), buf by
# tools/package-lock.json, the Node example by examples/node/package-lock.json.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/dev.lock
BUF := tools/node_modules/.bin/buf
# The Node.js example's dependencies, exactly as its lock file pins them (tests run it).
NODE_DEPS := examples/node/node_modules/.package-lock.json
# pytest-xdist's workers (scripts/check uses the same): most tests wait on a daemon, not a CPU.
PYTEST_WORKERS := -n 4 --dist loadgroup

.PHONY: demo test test-fast check proto bench lock clean need-redis need-chromium

# A new venv whenever the lock or pyproject changes, so it holds exactly what the lock pins and
# nothing left from before. The project itself goes in editable, without dependencies (the lock
# has them) and without build isolation (setuptools comes from the lock too).
$(BIN)/tailhub: pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(BUF): tools/package.json tools/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix tools
	touch $@

$(NODE_DEPS): examples/node/package.json examples/node/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix examples/node

demo: $(BIN)/tailhub
	$(BIN)/tailhub jobs launch examples/hello.yaml

# Cluster tests start their own redis-server: installed here when missing (root with apt).
need-redis:
	scripts/need-redis

# The browser tests drive Debian's headless Chromium: installed here when missing (root with apt).
need-chromium:
	scripts/need-chromium

test: need-redis need-chromium $(BIN)/tailhub $(BUF) $(NODE_DEPS)
	PATH="$(CURDIR)/$(BIN):$$PATH" BUF="$(BUF)" scripts/check

# The edit loop (under 90 s): tests/unit and the end-to-end tests not marked slow, on several
# workers; no lint or types. Tests whose requirement is missing (root, redis-server) say why.
test-fast: $(BIN)/tailhub $(BUF) $(NODE_DEPS)
	PATH="$(CURDIR)/$(BIN):$$PATH" BUF="$(BUF)" $(BIN)/pytest -m "not slow" $(PYTEST_WORKERS) -q

# Refresh the locks: Python packages (direct ones at their lowest allowed version, so the suite
# runs against the floors pyproject.toml promises; the rest at their newest), the runtime subset
# the wheel test installs (same versions), and buf.
lock: $(BIN)/tailhub
	$(BIN)/uv pip compile pyproject.toml --extra dev --resolution lowest-direct --universal \
		--python-version 3.10 --generate-hashes --quiet --custom-compile-command "make lock" -o $(LOCK)
	$(BIN)/uv pip compile pyproject.toml --constraint $(LOCK) --resolution lowest-direct --universal \
		--python-version 3.10 --generate-hashes --quiet --custom-compile-command "make lock" \
		-o requirements/runtime.lock
	npm install --package-lock-only --silent --no-audit --no-fund --prefix tools

# Regenerate the protobuf/gRPC code and stubs from proto/ (commit the result).
proto: $(BIN)/tailhub
	PYTHON=$(BIN)/python scripts/gen-proto

bench: $(BIN)/tailhub
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tools tools/node_modules build dist *.egg-info examples/node/node_modules
