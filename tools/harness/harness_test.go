package harness

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestWriteYAML(t *testing.T) {
	tree := map[string]any{
		"port":    8080,
		"bind":    "127.0.0.1",
		"worker":  map[string]any{"command": []string{"w", "--id", "{worker_id}"}, "grace": "2s"},
		"catalog": []any{map[string]any{"name": "tiny", "vram_bytes": 10}},
		"auth":    map[string]any{},
		"dirs":    []string{},
	}
	mergeTree(tree, map[string]any{"worker": map[string]any{"grace": "1s"}, "bind": nil})
	want := `auth: {}
catalog:
  - name: "tiny"
    vram_bytes: 10
dirs: []
port: 8080
worker:
  command:
    - "w"
    - "--id"
    - "{worker_id}"
  grace: "1s"
`
	if got := writeYAML(tree); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestMarkedProcessesAreFoundAndKilled is the cleanup's guarantee: a
// process tree carrying the marker, in a group of its own, is found through
// /proc and killed with its group.
func TestMarkedProcessesAreFoundAndKilled(t *testing.T) {
	marker := MarkerEnv + "=unit-" + randomHex(4)
	cmd := exec.Command("/bin/sh", "-c", "sleep 1000 & echo started; wait")
	cmd.Env = []string{"PATH=/usr/bin:/bin", marker}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	buf := make([]byte, 8)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	var procs []Proc
	if !Poll(5*time.Second, 10*time.Millisecond, func() bool { procs = ProcsWithEnv(marker); return len(procs) == 2 }) {
		t.Fatalf("found %+v, want the shell and its sleep", procs)
	}
	for _, p := range procs {
		if p.PGID != cmd.Process.Pid {
			t.Errorf("process %+v not in group %d", p, cmd.Process.Pid)
		}
	}
	killGroupAndPID(procs[0])
	_ = cmd.Wait()
	if !Poll(5*time.Second, 10*time.Millisecond, func() bool { return len(ProcsWithEnv(marker)) == 0 }) {
		t.Fatalf("still alive: %+v", ProcsWithEnv(marker))
	}
	if Alive(cmd.Process.Pid) {
		t.Fatalf("shell %d alive", cmd.Process.Pid)
	}
}
