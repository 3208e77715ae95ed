# kuasar-go build and test entry points. `make help` lists them.
GO        ?= go
BIN       ?= bin
PKG       := github.com/kuasar-go/kuasar
REVISION  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X $(PKG)/internal/version.Revision=$(REVISION)
GUEST_DIR ?= /var/lib/kuasar/guest
TEST_TIMEOUT ?= 75m
FUZZTIME  ?= 5s

BINARIES := kuasar kuasar-sandboxer containerd-shim-kuasar-v1 kuasar-bench kuasar-vmm-jail

WASMEDGE_BIN ?= $(BIN)/wasmedge

.PHONY: help deps build demo guest guest-minimal fixtures test test-short test-race fuzz bench lint clean install wasmedge test-wasmedge

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install Debian packages and build containerd, ctr and crictl into ~/.cache/kuasar-tools (idempotent: well under a second when done)
	bash .ci/deps.sh

build: ## build the binaries into ./bin
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(filter-out kuasar-vmm-jail,$(BINARIES)))
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kuasar-task ./cmd/kuasar-task
# kuasar-vmm-jail static: no dynamic loader on each VMM start
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kuasar-vmm-jail ./cmd/kuasar-vmm-jail

wasmedge: ## build the binaries with the WasmEdge engine (-tags wasmedge) into bin/wasmedge: natively with libwasmedge-dev, else in a cached Debian 13 root (root)
	bash .ci/wasmedge.sh build $(WASMEDGE_BIN)

test-wasmedge: wasmedge ## the WasmEdge engine's tests, CLI parity with WasmEdge's own CLI, and containerd + crictl pods on WasmEdge (root)
	bash .ci/wasmedge.sh test $(WASMEDGE_BIN)

demo: deps build guest ## on a fresh machine: install what is needed, build, then run a Wasm pod and a VM pod through crictl on a private containerd + kuasar-sandboxer, and remove everything (root)
	$(BIN)/kuasar demo

guest: deps ## build the micro-VM guest (Debian kernel + initramfs) into $(GUEST_DIR)/<version>, linked from /var/lib/kuasar
	$(GO) run ./vm/guest/cmd/kuasar-guest-build -out $(GUEST_DIR) -link /var/lib/kuasar

guest-minimal: ## the same with a minimal kernel built from linux-source-6.1 (~5-10 min once, cached; boot with machine_options = "acpi=off")
	$(GO) run ./vm/guest/cmd/kuasar-guest-build -out $(GUEST_DIR) -minimal

fixtures: ## rebuild the Wasm test modules from their C and WAT sources
	bash internal/fixtures/build.sh

test: deps guest ## install the dependencies (make deps), then run every test, integration tests with real containerd, crictl and QEMU included (root)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short: ## unit tests only (-short): no QEMU, containerd, crictl or binaries built; in-process registries and Wasm only; under 2 minutes
	$(GO) test -short -count=1 ./...

test-race: ## 1,000 concurrent Wasm sandbox lifecycles, twice, under the race detector; goroutines, fds and RSS back to baseline (root)
	$(GO) test -race -count=1 -run TestThousandLifecycles ./sandboxer/

fuzz: ## run every fuzz target for FUZZTIME each (default 5s); their seed corpora (testdata/fuzz) also run in every `go test`
	@set -e; for f in $$(git grep -l '^func Fuzz' -- '*_test.go'); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz $$t ./$$(dirname $$f) for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f); \
		done; \
	done

bench: build ## run kuasar bench (BENCH_ARGS='--quick', or scenario names) and write its JSON and plots under bench/results
	$(BIN)/kuasar bench --json bench/results/bench.json --plot bench/results $(BENCH_ARGS)

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'run gofmt -w'; exit 1)
	$(GO) vet ./...

install: build ## install the binaries into /usr/local/bin
	install -m 0755 $(addprefix $(BIN)/,$(BINARIES)) /usr/local/bin/

clean: ## remove build output
	rm -rf $(BIN) bench/results
