# The two commands a new user needs: `make demo` and `make test`.
GO      ?= go
PG_BIN  ?= /usr/lib/postgresql/15/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: build demo demo-mysql test deps vet

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

# Everything CI runs.
test: deps vet
	$(GO) test -race -count=1 -timeout 60m ./...

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
