# shipwatch — build and test entry points. `make test` is the one command that
# runs every test (unit, integration against the local Docker engine, the
# cosign interoperability test, and a short fuzzing run); CI runs exactly it.

GO            ?= go
export GOTOOLCHAIN := local
TOOLS         := $(CURDIR)/.tools
COSIGN_MODULE := github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
FUZZTIME      ?= 5s

.PHONY: build test unit fuzz-short tools lint

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/shipwatch ./cmd/shipwatch

# tools installs the test-only tools (the cosign CLI, a test oracle) into .tools.
tools: $(TOOLS)/cosign

$(TOOLS)/cosign:
	GOBIN=$(TOOLS) $(GO) install $(COSIGN_MODULE)

lint:
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) vet ./...

test: tools lint
	PATH="$(TOOLS):$$PATH" $(GO) test -count=1 -timeout 70m ./...
	$(MAKE) --no-print-directory fuzz-short

# unit runs the tests that need neither Docker nor cosign.
unit:
	$(GO) test -short ./...

# fuzz-short runs every fuzz target for FUZZTIME (longer: make fuzz-short FUZZTIME=10m).
fuzz-short:
	@scripts/fuzz.sh $(FUZZTIME)
