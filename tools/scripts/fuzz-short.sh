#!/usr/bin/env bash
# A short run of every fuzz target in the workspace (found by name, so new
# targets are included). Usage: fuzz-short.sh [fuzztime], default 3s.
#
# A real finding is saved under the package's testdata/fuzz/ and fails every
# later run (the seed corpora run as ordinary tests too). A failure that saved
# no input is the fuzzing engine itself on a loaded machine (seen here: a
# worker lost, or "context deadline exceeded" as -fuzztime runs out); such a
# target gets up to three tries before the run fails.
set -euo pipefail
fuzztime=${1:-3s}
go=${GO:-go}
cd "$(dirname "$0")/../.."

run() { "$go" test -run '^$' -fuzz "^$2\$" -fuzztime "$fuzztime" "$1"; }
saved() { { ls "$1" 2>/dev/null || true; } | wc -l; } # inputs in a corpus dir

for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$dir"/*_test.go); do
		echo "== fuzz $dir $target $fuzztime"
		corpus="$dir/testdata/fuzz/$target"
		before=$(saved "$corpus")
		for try in 1 2 3; do
			if run "$dir" "$target"; then
				break
			fi
			if [ "$(saved "$corpus")" -gt "$before" ]; then
				echo "fuzz: $target found a failing input, saved in $corpus" >&2
				exit 1
			fi
			if [ "$try" = 3 ]; then
				echo "fuzz: $target failed three times without saving an input" >&2
				exit 1
			fi
			echo "fuzz: $target failed without saving an input; trying again" >&2
		done
	done
done
