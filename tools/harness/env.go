package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// MarkerEnv is the environment variable that tags every process of one Env
// (daemons, and through them their workers).
const MarkerEnv = "RBEE_E2E_RUN"

// Env is one test's world: the built binaries, a temporary directory, a
// marker for its processes, and a cleanup that leaves nothing running.
type Env struct {
	TB   testing.TB
	Bins Binaries
	Dir  string // the test's temporary directory
	ID   string // unique per Env; the marker's value

	mu      sync.Mutex
	daemons []*Daemon
	hubs    []int // hubserver pids
	n       int   // daemons started, for file names
}

// New builds the binaries (once per test binary) and prepares an Env whose
// cleanup kills every process it started, workers included, then checks
// that none is left.
func New(tb testing.TB) *Env {
	tb.Helper()
	e := &Env{TB: tb, Bins: BuildOnce(tb), Dir: tb.TempDir(), ID: randomHex(8)}
	tb.Cleanup(e.cleanup)
	return e
}

// Marker is the KEY=VALUE entry that every process of this Env carries.
func (e *Env) Marker() string { return MarkerEnv + "=" + e.ID }

// Procs lists the live (not zombie) processes of this Env: daemons, workers
// and anything they started, whoever their parent is now.
func (e *Env) Procs() []Proc {
	var out []Proc
	for _, p := range ProcsWithEnv(e.Marker()) {
		if !p.Zombie() {
			out = append(out, p)
		}
	}
	return out
}

// WorkerProcs lists the live processes of this Env that are neither a
// daemon nor a hub server: workers and whatever they started.
func (e *Env) WorkerProcs() []Proc {
	e.mu.Lock()
	skip := make(map[int]bool)
	for _, d := range e.daemons {
		skip[d.PID()] = true
	}
	for _, pid := range e.hubs {
		skip[pid] = true
	}
	e.mu.Unlock()
	var out []Proc
	for _, p := range e.Procs() {
		if !skip[p.PID] {
			out = append(out, p)
		}
	}
	return out
}

// Path returns a path inside the Env's directory.
func (e *Env) Path(elem ...string) string {
	return filepath.Join(append([]string{e.Dir}, elem...)...)
}

func (e *Env) cleanup() {
	e.mu.Lock()
	daemons := append([]*Daemon(nil), e.daemons...)
	e.mu.Unlock()
	if e.TB.Failed() {
		for _, d := range daemons {
			e.TB.Logf("=== daemon %d (pid %d) log %s:\n%s", d.n, d.PID(), d.LogPath, tail(d.Log(), 120))
		}
		e.dumpWorkerLogs()
	}
	for _, d := range daemons {
		d.kill()
	}
	// Whatever carries the marker now: workers of a killed daemon, their
	// children, workers that outlived a failed test.
	left := e.Procs()
	for _, p := range left {
		killGroupAndPID(p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		left = e.Procs()
		for _, p := range left {
			killGroupAndPID(p)
		}
	}
	for _, p := range left {
		e.TB.Errorf("harness: process %d (%s) still alive after cleanup", p.PID, p.Cmdline)
	}
	for _, d := range daemons {
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			e.TB.Errorf("harness: daemon %d not reaped", d.PID())
		}
	}
}

// dumpWorkerLogs logs the tail of every worker log under the Env's state
// directories, for a failed test.
func (e *Env) dumpWorkerLogs() {
	_ = filepath.Walk(e.Dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.Contains(path, string(filepath.Separator)+"logs"+string(filepath.Separator)) {
			return nil
		}
		b, _ := os.ReadFile(path)
		e.TB.Logf("=== worker log %s:\n%s", path, tail(string(b), 40))
		return nil
	})
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// FreePort returns a port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var portBlock atomic.Int64

// WorkerPortRange returns a range of 40 ports for one daemon's workers,
// below the kernel's ephemeral range (so no outgoing connection takes a
// worker's port between the hive's check and the worker's bind), distinct
// from the ranges of the other daemons of this test binary and likely
// distinct from other test binaries' (spread by pid). The hive checks each
// port by binding, so an overlap costs a retry, not a failure.
func WorkerPortRange() [2]int {
	const size, lowest = 40, 10000
	top := 32768 // Linux's default ephemeral range starts here
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > lowest+100*size {
				top = lo
			}
		}
	}
	blocks := (top - lowest) / size
	base := (os.Getpid()*7 + int(portBlock.Add(1))) % blocks
	lo := lowest + base*size
	return [2]int{lo, lo + size - 1}
}

// Poll calls cond every interval (starting at once) until it returns true or
// timeout passes; it returns whether cond held. Use it instead of sleeping.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}
