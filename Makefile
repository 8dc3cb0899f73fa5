# The one entry point for checks. `make test` is what the README and CI run.
GO ?= go
# Every module of the workspace, from go.work itself (the layer checker keeps go.work
# and the layer table in step).
MODULES := $(shell $(GO) list -m -f '{{.Dir}}' | sed 's|^$(CURDIR)/||')

.PHONY: test modules fmt race layers fuzz-short run

test: fmt modules race layers fuzz-short

# gofmt over every tracked Go file.
fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Each module on its own: tidy, build outside the workspace, vet.
modules:
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && GOWORK=off $(GO) mod tidy -diff && GOWORK=off $(GO) build ./... && $(GO) vet ./...); \
	done

# Every test of every module, with the race detector.
race:
	$(GO) test -race -count=1 -timeout 20m work

# The layer table of DESIGN.md, enforced.
layers:
	$(GO) run ./tools/cmd/layercheck .

# A short run of every fuzz target (tools/scripts/fuzz-short.sh finds them by
# name); the seed corpora already ran as tests above. Longer: FUZZTIME=10m.
FUZZTIME ?= 3s
fuzz-short:
	GO=$(GO) tools/scripts/fuzz-short.sh $(FUZZTIME)

run:
	$(GO) run ./cmd/rbee-hive
