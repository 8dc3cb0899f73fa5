#!/bin/bash
# The benchmark tool on the device machine, binaries from the dev machine.
B=$(cd "$(dirname "$0")" && pwd)
export PATH=$B:$PATH
nproc; uptime
$B/bin/bench -out $OUT/bench-gpu-host.json -md $OUT/bench-gpu-host.md 2>$OUT/bench-gpu-host.log
echo "bench rc $?"
cat $OUT/bench-gpu-host.md
