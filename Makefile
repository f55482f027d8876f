# The two commands a new machine needs (see README):
#   make demo   launch the sample job and follow its log through an auto-started daemon
#   make test   every check CI runs: format, lint, types, buf lint, stale generated code, tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
# The Node.js example's dependencies, exactly as its lock file pins them (tests run it).
NODE_DEPS := examples/node/node_modules/.package-lock.json

.PHONY: demo test check proto bench clean need-redis

$(BIN)/tailhub: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

$(NODE_DEPS): examples/node/package.json examples/node/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix examples/node

demo: $(BIN)/tailhub
	$(BIN)/tailhub jobs launch examples/hello.yaml

# Cluster tests start their own redis-server: installed here when missing (root with apt).
need-redis:
	scripts/need-redis

test: need-redis $(BIN)/tailhub $(BUF) $(NODE_DEPS)
	PATH="$(CURDIR)/$(BIN):$$PATH" BUF="$(BUF)" scripts/check

# Regenerate the protobuf/gRPC code and stubs from proto/ (commit the result).
proto: $(BIN)/tailhub
	PYTHON=$(BIN)/python scripts/gen-proto

bench: $(BIN)/tailhub
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tools build *.egg-info examples/node/node_modules
