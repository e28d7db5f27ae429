# timbus — make targets. `make run` and `make test` are all a new user needs.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
BIN         := bin

# make run settings; override on the command line, e.g. make run HTTP_LISTEN=:9090
HTTP_LISTEN ?= :8080
NATS_LISTEN ?= 127.0.0.1:4222
SDKAPPID    ?= 1400000001
RESERVED    ?= admin,official,tencent,timbus
TRY_ADDR     = $(if $(filter :%,$(HTTP_LISTEN)),127.0.0.1$(HTTP_LISTEN),$(HTTP_LISTEN))

# Fuzz targets as package:Target; `make test` runs each briefly, `make fuzz` long.
FUZZ_TARGETS := ./bridge:FuzzParseCallback ./bridge:FuzzAppendJSONString ./bridge:FuzzAuditRecord ./deciders/catalog:FuzzValidateReply ./internal/jsonscan:FuzzObject ./internal/jsonscan:FuzzObjectKeys ./internal/jsonscan:FuzzCheck ./internal/jsonscan:FuzzValid ./deciders:FuzzCallbackFields
# A count rather than a duration: a short -fuzztime can end mid-input and
# fail with "context deadline exceeded" (golang/go#56238).
FUZZTIME_TEST ?= 20000x
FUZZTIME      ?= 2m

# What the example deciders need: Debian packages (C and shell examples, wrk
# for the benchmark, prometheus for promtool and the dashboard and alert tests
# of deploy/observability), npm packages (Node example) and the nats CLI
# (shell example). Tests whose tools are missing are skipped, or fail when
# TIMBUS_REQUIRE_EXAMPLES=1 (internal/needs).
APT_PACKAGES := gcc make pkg-config libnats-dev libcjson-dev jq wrk prometheus
NATSCLI      := github.com/nats-io/natscli/nats@v0.5.0
NODE_EXAMPLE := deciders/examples/node-groupfilter
SUDO          = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# -race needs cgo, which Go turns off where it finds no C compiler; the tests
# then run without the race detector rather than not at all.
RACE ?= $(if $(filter 1,$(shell $(GO) env CGO_ENABLED 2>/dev/null)),-race)

.PHONY: all build run test test-hostile unit fuzz-short fuzz bench bench-go soak lint observability clean help deps deps-apt deps-node deps-natscli

all: lint test build

help:
	@echo "make run    bridge on $(HTTP_LISTEN) + embedded NATS on $(NATS_LISTEN) + demo decider"
	@echo "make test   all tests with the race detector, plus short fuzz runs; examples whose tools are missing are skipped"
	@echo "make deps   what the example deciders need: apt packages, npm packages, the nats CLI"
	@echo "make build  binaries in $(BIN)/"
	@echo "make lint   gofmt and go vet"
	@echo "make fuzz   each fuzz target for FUZZTIME ($(FUZZTIME))"
	@echo "make bench  end-to-end speed benchmark: wrk, timbus, NATS, baselines (~6.5 min; BENCH_FLAGS=--quick, --strict)"
	@echo "make bench-go  Go micro-benchmarks with -benchmem"
	@echo "make soak   a bounded soak under decider restarts (TIMBUS_SOAK=3m)"
	@echo "make test-hostile  only the hostile-client suite"
	@echo "make observability  regenerate deploy/kubernetes/monitoring from deploy/observability's dashboard and rules"

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/timbus ./cmd/timbus
	$(GO) build -trimpath -o $(BIN)/officialaccount-decider ./deciders/examples/go-officialaccount
	$(GO) build -trimpath -o $(BIN)/groupfilter-decider ./deciders/examples/go-groupfilter

# The decider connects with retries, so it may start before the bridge's
# embedded NATS server is up; both stop together on Ctrl-C.
run: build
	@echo "timbus: bridge on $(HTTP_LISTEN), NATS on $(NATS_LISTEN), SdkAppid $(SDKAPPID); reserved names: $(RESERVED)"
	@echo "Try it (in another terminal):"
	@echo "  curl -s -X POST 'http://$(TRY_ADDR)/?SdkAppid=$(SDKAPPID)&CallbackCommand=OfficialAccount.CallbackBeforeCreateOfficialAccount&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI' \\"
	@echo "       -d '{\"CallbackCommand\":\"OfficialAccount.CallbackBeforeCreateOfficialAccount\",\"Operator_Account\":\"107867\",\"Owner_Account\":\"107867\",\"Name\":\"admin\",\"EventTime\":1670574414123}'"
	@echo "Stop with Ctrl-C."
	@set -e; \
	$(BIN)/officialaccount-decider --nats-url nats://$(NATS_LISTEN) --reserved '$(RESERVED)' & decider=$$!; \
	trap 'kill $$decider 2>/dev/null; wait $$decider 2>/dev/null' EXIT; \
	trap 'exit 0' INT TERM; \
	$(BIN)/timbus serve --listen '$(HTTP_LISTEN)' --nats-listen '$(NATS_LISTEN)' --sdkappid '$(SDKAPPID)' --log-format console

test: unit fuzz-short

# deps installs only what is missing, so it is quick once done.
deps: deps-apt deps-node deps-natscli

# Without apt (macOS, Fedora…) it says what to install by hand and goes on:
# the tests of examples whose tools are missing are skipped.
deps-apt:
	@if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then \
		echo "deps: no apt-get here; install by hand what the C and shell examples and make bench need:"; \
		echo "  a C compiler, make, pkg-config, the NATS C client (libnats) and cJSON headers, jq, wrk, Prometheus (with promtool)"; \
		echo "  e.g. macOS: brew install cnats cjson pkg-config jq wrk prometheus"; \
		exit 0; \
	fi; \
	missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	[ -n "$$missing" ] || exit 0; \
	if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null 2>&1; then \
		echo "deps: not root and no sudo; as root, run: apt-get install -y" $$missing; \
		exit 0; \
	fi; \
	echo "installing Debian packages:" $$missing; \
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing

deps-node: $(NODE_EXAMPLE)/node_modules/.package-lock.json

$(NODE_EXAMPLE)/node_modules/.package-lock.json: $(NODE_EXAMPLE)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "deps: no npm here; install Node.js 20 or later with npm, then run make deps again (Node example)"; \
		exit 0; \
	fi; \
	echo "npm ci --prefix $(NODE_EXAMPLE) --no-audit --no-fund"; \
	npm ci --prefix $(NODE_EXAMPLE) --no-audit --no-fund

deps-natscli: $(BIN)/nats

$(BIN)/nats:
	GOBIN=$(CURDIR)/$(BIN) $(GO) install $(NATSCLI)

# Skip lines are invisible without -v: needs.Tools also writes them to a
# file, shown at the end.
unit:
	@[ -n "$(RACE)" ] || echo "note: cgo is off (no C compiler found), so the tests run without -race"
	@report=$$(mktemp); \
	echo "$(GO) test $(RACE) -count=1 -timeout 8m ./..."; \
	TIMBUS_SKIP_REPORT=$$report $(GO) test $(RACE) -count=1 -timeout 8m ./...; status=$$?; \
	if [ -s "$$report" ]; then \
		echo "Skipped, for want of tools (make deps installs them; TIMBUS_REQUIRE_EXAMPLES=1 fails instead):"; \
		sort -u "$$report"; \
	fi; \
	rm -f "$$report"; exit $$status

# The hostile-client suite alone: every test named Hostile (also in make test).
test-hostile:
	$(GO) test $(RACE) -count=1 -run 'Hostile' ./bridge/ ./cmd/timbus/

fuzz-short:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($(FUZZTIME_TEST))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME_TEST) $$pkg || exit 1; \
	done

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# End-to-end speed benchmark (cmd/timbus-bench), on 127.0.0.1 only: wrk against
# raw fasthttp, raw NATS request-reply, timbus with embedded and with external
# NATS (embedded also with an audit subscriber, and with a Go SDK decider
# beside the plain one), and a naive hand-written bridge (with external and
# with embedded NATS), interleaved with raw-http runs so that only ratios
# measured side by side count; also the CPU each process spends per
# request. It reports the floors of the README's speed section and draws the
# figures in $(BIN)/bench.svg.
# Flags go in BENCH_FLAGS, e.g.
# make bench BENCH_FLAGS=--quick (1 round of 2 s runs, ~45 s), or
# make bench BENCH_FLAGS=--strict (exit non-zero when a floor is missed).
NATS_SERVER := github.com/nats-io/nats-server/v2@v2.15.2
BENCH_FLAGS ?=

bench: build deps-apt $(BIN)/nats-server
	$(GO) build -trimpath -o $(BIN)/timbus-bench ./cmd/timbus-bench
	$(BIN)/timbus-bench --timbus $(BIN)/timbus --nats-server $(BIN)/nats-server --svg $(BIN)/bench.svg $(BENCH_FLAGS)

$(BIN)/nats-server:
	GOBIN=$(CURDIR)/$(BIN) $(GO) install $(NATS_SERVER)

# A bounded soak: steady load through a bridge while example decider processes
# are restarted (drained or killed) every few seconds; asserts nothing is lost
# or late and that goroutines and memory return to their baseline.
# make soak TIMBUS_SOAK=10m for a longer run.
soak:
	TIMBUS_SOAK=$${TIMBUS_SOAK:-3m} $(GO) test $(RACE) -count=1 -run '^TestSoak$$' -timeout 30m -v ./bridge/

# The Go micro-benchmarks (in-process hot path, e.g. bridge/bench_test.go).
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The Prometheus Operator and Grafana sidecar manifests of
# deploy/kubernetes/monitoring are made from deploy/observability's dashboard
# and rules; go test ./deploy/observability fails when they differ.
observability:
	$(GO) test -count=1 -run '^TestKubernetesManifests$$' ./deploy/observability -update

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
