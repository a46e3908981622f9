# The two commands a new user needs: `make demo` and `make test`.
GO      ?= go
PG_BIN  ?= /usr/lib/postgresql/15/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The Vault server the tests start, built from its Go module once per machine.
VAULT_VERSION := 1.13.0
VAULT_BIN     ?= $(HOME)/.cache/sluice/vault-$(VAULT_VERSION)/vault

.PHONY: build demo demo-mysql bench test unit deps vet vault

# One static binary: no cgo.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sluice ./cmd/sluice

# Starts a private PostgreSQL with logical replication, runs sluice on its
# embedded NATS, writes sample rows and shows the events with `sluice tail`.
demo: deps build
	$(GO) run ./cmd/sluice-demo --sluice bin/sluice

# The same demo on a private MariaDB (binlog, GTIDs).
demo-mysql: deps build
	$(GO) run ./cmd/sluice-demo --sluice bin/sluice --mysql

# Measures sluice against pg_recvlogical, a bare binlog reader and JetStream
# alone, on this machine (README "Performance"); BENCH_ARGS="--rows 200000 --json".
bench: deps build
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/sluice-bench ./cmd/sluice-bench
	bin/sluice-bench pg $(BENCH_ARGS)
	bin/sluice-bench mysql $(BENCH_ARGS)

# Everything CI runs.
# End-to-end tests wait on their servers more than they use the CPU: four
# run at a time. The million-row backfill, too large for the race
# detector, is built without it and runs beside the others.
test: deps vault vet
	@SLUICE_VAULT_BIN=$(VAULT_BIN) $(GO) test -race -count=1 -parallel 4 -timeout 60m ./... & race=$$!; \
	  $(GO) test -count=1 -timeout 20m -run 'Million' ./cmd/sluice/; million=$$?; \
	  wait $$race; race=$$?; \
	  echo "race-detector tests exit $$race, million-row test exit $$million"; \
	  [ $$race -eq 0 ] && [ $$million -eq 0 ]

# The tests that start no server (`go test -short` skips the others): no
# database, Vault or NATS, so no deps; under a minute once the build cache is
# warm. For the edit-compile loop; `make test` is still what CI runs.
unit:
	$(GO) test -short -count=1 ./...

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The real servers the tests and the demo start. Installed only when missing.
deps:
	@missing=""; \
	  [ -x "$(PG_BIN)/initdb" ] || missing="$$missing postgresql-15"; \
	  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	  fi

# Vault has no Debian package, and its newest releases do not build from the
# module proxy: build the pinned one from its own tools module (a few minutes
# on 2 cores), outside the repo, once.
vault: $(VAULT_BIN)

$(VAULT_BIN):
	@echo "building Vault $(VAULT_VERSION) from its Go module into $(VAULT_BIN) (once per machine, a few minutes)"
	@mkdir -p $(dir $(VAULT_BIN))
	cd sources/credentials/vaulttest/vaultbin && GOFLAGS=-mod=mod $(GO) build -o $(VAULT_BIN).tmp github.com/hashicorp/vault
	mv $(VAULT_BIN).tmp $(VAULT_BIN)
