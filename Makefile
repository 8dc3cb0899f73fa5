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

# A short run of every fuzz target (found by name, so new ones are included);
# the seed corpora already ran as tests above. Longer by hand: FUZZTIME=10m.
FUZZTIME ?= 3s
fuzz-short:
	@set -e; for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$d/*_test.go); do \
			echo "== fuzz $$d $$f $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$d; \
		done; \
	done

run:
	$(GO) run ./cmd/rbee-hive
