#!/bin/bash
# rbee-hive on a real NVIDIA GPU (see README.md here for how to run it): NVML through go-nvml, reservation against a
# foreign CUDA tenant, worker env, metrics, clean shutdown with no orphan.
set -u
B=$(cd "$(dirname "$0")" && pwd); W=/tmp/hive; rm -rf $W; mkdir -p $W/models
step() { echo; echo "=== $*"; }
step nvidia-smi; nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,pci.bus_id,driver_version --format=csv
step resources test against the real driver
$B/resources.test -test.run 'TestNewRealDriver|TestCPUFromRealProcMeminfo' -test.v -test.count=1 2>&1 | tail -8
head -c 64M /dev/urandom > $W/models/m.gguf
cat > $W/hive.yaml <<Y
port: 18080
state_dir: $W/state
log: {level: debug}
provisioner: {cache_dir: $W/cache, local_dirs: ["$W/models"]}
restart: {backoff: {initial: 50ms, jitter: 0}}
catalog:
  - {name: small, model_ref: "file:$W/models/m.gguf", vram_bytes: 4294967296}
  - {name: big, model_ref: "file:$W/models/m.gguf", vram_bytes: 32212254720}
Y
PATH=$B:$PATH $B/rbee-hive --config $W/hive.yaml >$W/hive.log 2>&1 & HIVE=$!
for i in $(seq 50); do curl -sf localhost:18080/v1/health >/dev/null && break; sleep 0.1; done
C() { curl -s -w '  [%{http_code} %{time_total}s]\n' "$@"; }
step status; C localhost:18080/v1/status
step status timing x20; for i in $(seq 20); do curl -s -o /dev/null -w '%{time_total} ' localhost:18080/v1/status; done; echo
step spawn small on cuda; C -XPOST localhost:18080/v1/workers/spawn -d '{"model_ref":"small","backend":"cuda","wait":true}'
step status after spawn; C localhost:18080/v1/status | grep -o '"devices":[^]]*]'
PID=$(pgrep -f 'llm-worker-rbee --worker-id' | head -1); echo worker pid $PID
tr '\0' '\n' </proc/$PID/environ | grep -E '^(CUDA_VISIBLE|CUDA_DEVICE|RBEE_W)' | sed 's/TOKEN=.*/TOKEN=<redacted>/'
step foreign tenant takes GPU memory
python3 -c "
import torch,time,sys
free,total=torch.cuda.mem_get_info(); n=int(free-24*2**30)
x=torch.empty(n,dtype=torch.uint8,device='cuda'); print('tenant holds',n>>30,'GiB',flush=True); time.sleep(60)" & PY=$!
for i in $(seq 120); do sleep 0.5; f=$(nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits); [ "$f" -lt 30000 ] && break; done; nvidia-smi --query-gpu=memory.used,memory.free --format=csv
step spawn big 30 GiB must be refused; C -XPOST localhost:18080/v1/workers/spawn -d '{"model_ref":"big","backend":"cuda","wait":true}'
step spawn small still fits; C -XPOST localhost:18080/v1/workers/spawn -d '{"model_ref":"small","backend":"cuda","device":0,"wait":true}' | cut -c1-200
kill $PY; wait $PY 2>/dev/null; sleep 1
step spawn big after the tenant left; C -XPOST localhost:18080/v1/workers/spawn -d '{"model_ref":"big","backend":"cuda","wait":true}' | cut -c1-200
step "status: two small, 4 GiB each, and one big, 30 GiB: 38 GiB reserved"
C localhost:18080/v1/status | grep -o '"devices":[^]]*]'
step kill -9 the hive, start it again: workers re-adopted, memory reserved again
kill -9 $HIVE; wait $HIVE 2>/dev/null; pgrep -fc 'llm-worker-rbee --worker-id'
PATH=$B:$PATH $B/rbee-hive --config $W/hive.yaml >>$W/hive.log 2>&1 & HIVE=$!
for i in $(seq 50); do curl -sf localhost:18080/v1/health >/dev/null && break; sleep 0.1; done
C localhost:18080/v1/workers/list | grep -o '"state":"[a-z]*"' | sort | uniq -c
C localhost:18080/v1/status | grep -o '"devices":[^]]*]'
step metrics; curl -s localhost:18080/metrics | grep -E '^rbee_hive_(device|gpu|vram|workers)' | head -20
PID=$(pgrep -f 'llm-worker-rbee --worker-id' | head -1)
step kill -9 a worker; kill -9 $PID; sleep 0.5; C localhost:18080/v1/workers/health | cut -c1-400
step SIGTERM hive; T0=$(date +%s%N); kill -TERM $HIVE; wait $HIVE; RC=$?; echo "hive exit $RC after $(( ($(date +%s%N) - T0) / 1000000 )) ms"
step leftovers; pgrep -af llm-worker-rbee || echo "no worker process left"
nvidia-smi --query-gpu=memory.used --format=csv
step hive log excerpt; grep -iE 'nvml|cuda|device|warn|error' $W/hive.log | head -20
cp $W/hive.log $OUT/ 2>/dev/null; true
