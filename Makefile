# keybroker — common tasks. `make run` tries it, `make test` tests it.
SHELL := /bin/bash
BIN      := .run/bin
VAULTDEV := $(BIN)/vaultdev
GO       ?= go
# VERSION is what `keybroker version` says: git describe, else dev.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run run-vendors build test deps bench fuzz demo clean

## build: the static keybroker binary in .run/bin/keybroker
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)/keybroker ./cmd/proxy

## run: keybroker on the dev config in front of stand-in vendors (offline, no Vault needed)
run: build $(BIN)/standin $(BIN)/jwtcaller
	@bash scripts/dev-run.sh

## run-vendors: the same in front of the real vendors (credentials in dev/secrets/)
run-vendors: build $(BIN)/standin $(BIN)/jwtcaller
	@bash scripts/dev-run.sh --real

$(BIN)/standin: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/standin ./tools/standin

# jwtcaller makes the dev JWT caller's keys and token (bench/jwtcaller).
$(BIN)/jwtcaller: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/jwtcaller ./bench/jwtcaller

FORCE:

## deps: install redis-server, Go modules and the Vault test server
deps:
	@bash scripts/install-deps.sh

$(VAULTDEV): tools/vaultdev/main.go tools/vaultdev/go.mod tools/vaultdev/go.sum
	@mkdir -p $(BIN)
	@echo "==> building the Vault test server (the first build downloads ~500 MB and takes a few minutes)"
	cd tools/vaultdev && $(GO) build -o ../../$(VAULTDEV) .

## test: every test, with the race detector, against a real Vault and Redis
test: build $(VAULTDEV)
	KEYBROKER_VAULTDEV=$(CURDIR)/$(VAULTDEV) KEYBROKER_BIN=$(CURDIR)/$(BIN)/keybroker $(GO) test -race -count=1 ./...

## bench: the benchmarks (limiter decisions, proxy overhead)
bench: $(VAULTDEV)
	KEYBROKER_VAULTDEV=$(CURDIR)/$(VAULTDEV) $(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz: run each fuzz target for a while (FUZZTIME, default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzCleanPath -fuzztime $(FUZZTIME) ./internal/proxy
	$(GO) test -run '^$$' -fuzz FuzzConfig -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz FuzzLinkStream -fuzztime $(FUZZTIME) ./internal/reply

## demo: the whole flow offline: Vault, fake vendors, keybroker, two callers, a rotation
# The demo runs as its own binary, not under go run: Ctrl-C ends it, its
# keybroker and Vault cleanly, with exit status 0 and no make error.
demo: build $(VAULTDEV) $(BIN)/demo
	@echo "==> built keybroker and the Vault test server"
	@$(BIN)/demo -keybroker $(BIN)/keybroker -vaultdev $(VAULTDEV) $(DEMO_FLAGS)

$(BIN)/demo: FORCE
	@$(GO) build -o $(BIN)/demo ./tools/demo

clean:
	rm -rf .run
