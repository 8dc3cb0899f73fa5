package monitor

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

// runTestHive is a minimal hive in its own process (RBEE_TEST_HIVE_MAIN=1):
// a monitor without a state dir spawns one reference worker, prints its pid
// and waits to be killed.
func runTestHive() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "test hive:", err)
		os.Exit(1)
	}
	model := os.Getenv("RBEE_TEST_HIVE_MODEL")
	reg, _ := registry.Open(registry.Options{})
	res, err := resources.New(resources.Options{DisableCUDA: true})
	if err != nil {
		fail(err)
	}
	prov, err := provisioner.New(provisioner.Config{CacheDir: filepath.Join(filepath.Dir(model), "cache"),
		Token: "-", LocalDirs: []string{filepath.Dir(model)}})
	if err != nil {
		fail(err)
	}
	m, err := New(Config{
		Command: []string{os.Args[0], "--worker-id", "{worker_id}", "--port", "{port}"},
		Env:     []string{"RBEE_REFWORKER_MAIN=1", "RBEE_REF_READINESS=none", "RBEE_TEST_HIVE_MAIN=", "GORACE=atexit_sleep_ms=0"},
		// Readiness by poll: this hive serves no callback.
		Readiness: ReadinessPoll, LogDir: filepath.Dir(model), PortMin: 40000, PortMax: 60000,
		Logger: slog.New(slog.DiscardHandler),
	}, reg, res, prov)
	if err != nil {
		fail(err)
	}
	w, err := m.Spawn(context.Background(), SpawnRequest{ModelRef: "file:" + model, Backend: "cpu"})
	if err != nil {
		fail(err)
	}
	if w, err = m.WaitReady(context.Background(), w.ID); err != nil {
		fail(err)
	}
	fmt.Printf("worker-pid %d\n", w.PID)
	select {}
}

// Without a state dir, workers die with the hive: the parent-death signal
// reaches the worker even though the goroutine that spawned it is long gone.
func TestWorkersDieWithTheHiveWithoutStateDir(t *testing.T) {
	checkNoLeftovers(t)
	dir := t.TempDir()
	model := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(model, []byte("model"), 0o644); err != nil {
		t.Fatal(err)
	}
	hive := exec.Command(os.Args[0])
	hive.Env = append(os.Environ(), "RBEE_TEST_HIVE_MAIN=1", "RBEE_TEST_HIVE_MODEL="+model, "GORACE=atexit_sleep_ms=0")
	hive.Stderr = os.Stderr
	out, err := hive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hive.Start(); err != nil {
		t.Fatal(err)
	}
	pidc := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "worker-pid "); ok {
				pid, _ := strconv.Atoi(v)
				pidc <- pid
				return
			}
		}
		close(pidc)
	}()
	var worker int
	select {
	case worker = <-pidc:
	case <-time.After(30 * time.Second):
	}
	_ = hive.Process.Kill()
	_ = hive.Wait()
	if worker <= 0 {
		t.Fatal("the test hive did not report a ready worker")
	}
	waitUntil(t, "the worker to die with its hive", func() bool { return pidGone(worker) })
}
