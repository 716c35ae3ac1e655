# shipwatch — build and test entry points. `make test` is the one command that
# runs every test (unit, integration against the local Docker engine, the
# cosign interoperability test, and a short fuzzing run); CI runs exactly it.

GO            ?= go
export GOTOOLCHAIN := local
TOOLS         := $(CURDIR)/.tools
COSIGN_MODULE := github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
FUZZTIME      ?= 5s

.PHONY: build test unit fuzz-short faults faults-long tools lint

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/shipwatch ./cmd/shipwatch
	CGO_ENABLED=0 $(GO) build -tags agentonly -trimpath -o bin/shipwatch-agent ./cmd/shipwatch

# tools installs the test-only tools (the cosign CLI, a test oracle) into .tools.
tools: $(TOOLS)/cosign

$(TOOLS)/cosign:
	GOBIN=$(TOOLS) $(GO) install $(COSIGN_MODULE)

lint:
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) vet ./...
	$(GO) vet -tags agentonly ./cmd/shipwatch

test: tools lint
	PATH="$(TOOLS):$$PATH" $(GO) test -count=1 -timeout 70m ./...
	$(MAKE) --no-print-directory fuzz-short

# unit runs the tests that need neither Docker nor cosign.
unit:
	$(GO) test -short ./...

# fuzz-short runs every fuzz target for FUZZTIME (longer: make fuzz-short FUZZTIME=10m).
fuzz-short:
	@scripts/fuzz.sh $(FUZZTIME)

# faults runs the short fault-injection suite alone (it also runs in `make
# test`): every fault class 3 times against the real engine.
faults:
	$(GO) test -count=1 -timeout 60m -run TestFaultSuite ./internal/faults -v

# faults-long is the long form recorded in docs/faults.md: FAULT_RUNS runs of
# every class (several hundred runs, a few hours), the table in FAULT_REPORT.
FAULT_RUNS   ?= 25
FAULT_SEED   ?= 1
FAULT_REPORT ?= /tmp/shipwatch-faults-long.md
faults-long:
	$(GO) test -count=1 -timeout 10h -run TestFaultSuite ./internal/faults -v \
		-faults.runs $(FAULT_RUNS) -faults.seed $(FAULT_SEED) -faults.parallel 3 -faults.report $(FAULT_REPORT)
