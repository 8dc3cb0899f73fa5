// Package harness builds the real rbee-hive binaries and runs them as a user
// would: a config file, environment variables and flags, a process of its
// own, HTTP over 127.0.0.1. The end-to-end tests and the benchmarks use it.
//
// Every process a test starts carries a marker in its environment (the
// daemon passes its environment on to its workers), so the cleanup finds and
// kills whatever is left, workers included, even when a test fails half way.
//
//	e := harness.New(t)                       // binaries built once per test binary
//	hub := e.StartHub()                       // or e.StartHubServer("--repos", dir)
//	d := e.StartDaemon(harness.DaemonOptions{ // YAML file, RBEE_HIVE_TOKEN, --port
//		Config: map[string]any{"provisioner": map[string]any{"hf_endpoint": hub.URL()}},
//	})
//	w, err := d.Client().Spawn(ctx, client.SpawnRequest{ModelRef: ref, Backend: "cpu", Wait: true})
//	d.Kill9()                                 // or d.Stop(timeout), d.Signal(sig)
//	e.WorkerProcs()                           // what is still running, from /proc
//
// A TestMain should call RemoveBuilt after m.Run.
package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Binaries are the paths of the built programs.
type Binaries struct {
	Hive      string // cmd/rbee-hive
	RefWorker string // tools/cmd/refworker
	HubServer string // tools/cmd/hubserver; "" when the repo has no such command
}

// packages maps each binary to its package directory, relative to the root.
var packages = []struct {
	dir      string
	optional bool
	set      func(b *Binaries, path string)
}{
	{"cmd/rbee-hive", false, func(b *Binaries, p string) { b.Hive = p }},
	{"tools/cmd/refworker", false, func(b *Binaries, p string) { b.RefWorker = p }},
	{"tools/cmd/hubserver", true, func(b *Binaries, p string) { b.HubServer = p }},
}

// RepoRoot finds the workspace root: the nearest directory at or above the
// working directory that holds go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repo root: no go.work at or above the working directory")
		}
		dir = parent
	}
}

// Build compiles the binaries into dir (without -race: the programs under
// test are the ones a user runs), in workspace mode from the repo root. An
// optional program that is missing or does not build is left out
// (Binaries.HubServer is then ""); the error of a required one is returned.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := RepoRoot()
	if err != nil {
		return Binaries{}, err
	}
	var b Binaries
	required := []string{"build", "-o", dir + string(filepath.Separator)}
	var optional []string
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join(root, p.dir)); err != nil {
			if p.optional {
				continue
			}
			return Binaries{}, fmt.Errorf("build: %s: %w", p.dir, err)
		}
		if p.optional {
			optional = append(optional, p.dir)
			continue
		}
		required = append(required, "./"+p.dir)
		p.set(&b, filepath.Join(dir, filepath.Base(p.dir)))
	}
	if out, err := goCmd(ctx, root, required...); err != nil {
		return Binaries{}, fmt.Errorf("go build: %w\n%s", err, out)
	}
	for _, pkg := range optional {
		path := filepath.Join(dir, filepath.Base(pkg))
		if _, err := goCmd(ctx, root, "build", "-o", path, "./"+pkg); err == nil {
			for _, p := range packages {
				if p.dir == pkg {
					p.set(&b, path)
				}
			}
		}
	}
	return b, nil
}

func goCmd(ctx context.Context, root string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"), "GOFLAGS=")
	return cmd.CombinedOutput()
}

var built struct {
	once sync.Once
	dir  string
	bins Binaries
	err  error
}

// BuildOnce builds the binaries once per test binary, into a directory that
// RemoveBuilt deletes (call it from TestMain after m.Run).
func BuildOnce(tb testing.TB) Binaries {
	tb.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "rbee-e2e-bin-")
		if built.err == nil {
			built.bins, built.err = Build(context.Background(), built.dir)
		}
	})
	if built.err != nil {
		tb.Fatalf("harness: %v", built.err)
	}
	return built.bins
}

// RemoveBuilt deletes what BuildOnce built.
func RemoveBuilt() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

// Main is a TestMain for packages that use BuildOnce: it runs the tests,
// deletes the binaries and exits with the tests' status.
func Main(m *testing.M) {
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}
