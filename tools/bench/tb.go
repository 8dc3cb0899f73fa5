package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// runTB lets the test harness (written against testing.TB) run outside a
// test binary: one per benchmark item. Fatal and Skip end the item by
// panicking with a value that runItem recovers; cleanups run when the item
// ends, last registered first, as in a test.
type runTB struct {
	testing.TB // nil: only satisfies the unexported method; every method used is below

	name string
	dir  string
	log  *slog.Logger
	ctx  context.Context

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	errs     []string
	tmp      int
}

// stop is what Fatal and Skip panic with.
type stop struct {
	msg     string
	skipped bool
}

func newRunTB(ctx context.Context, name, dir string, log *slog.Logger) *runTB {
	return &runTB{name: name, dir: dir, log: log, ctx: ctx}
}

func (t *runTB) Helper()                  {}
func (t *runTB) Name() string             { return t.name }
func (t *runTB) Context() context.Context { return t.ctx }
func (t *runTB) Output() io.Writer        { return os.Stderr }
func (t *runTB) ArtifactDir() string      { return t.TempDir() }
func (t *runTB) Attr(key, value string)   {}
func (t *runTB) Chdir(dir string)         { panic(stop{msg: "Chdir is not supported by the benchmark tool"}) }
func (t *runTB) Setenv(key, value string) {
	panic(stop{msg: "Setenv is not supported by the benchmark tool"})
}
func (t *runTB) Skipped() bool { return false }

func (t *runTB) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}

// runCleanups runs the registered cleanups, last first; a cleanup that
// fails (Errorf) is recorded, one that panics does not stop the others.
func (t *runTB) runCleanups() {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.record(fmt.Sprintf("cleanup: %v", r))
				}
			}()
			f()
		}()
	}
}

func (t *runTB) record(msg string) {
	t.mu.Lock()
	t.failed = true
	t.errs = append(t.errs, msg)
	t.mu.Unlock()
	t.log.Error("bench item", "item", t.name, "error", msg)
}

func (t *runTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *runTB) Errors() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.errs...)
}

func (t *runTB) Log(args ...any) { t.log.Debug(fmt.Sprint(args...), "item", t.name) }
func (t *runTB) Logf(format string, args ...any) {
	t.log.Debug(fmt.Sprintf(format, args...), "item", t.name)
}
func (t *runTB) Error(args ...any) { t.record(fmt.Sprint(args...)) }
func (t *runTB) Errorf(format string, args ...any) {
	t.record(fmt.Sprintf(format, args...))
}
func (t *runTB) Fail() { t.record("failed") }
func (t *runTB) FailNow() {
	t.record("failed")
	panic(stop{msg: "failed"})
}
func (t *runTB) Fatal(args ...any) {
	msg := fmt.Sprint(args...)
	t.record(msg)
	panic(stop{msg: msg})
}
func (t *runTB) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.record(msg)
	panic(stop{msg: msg})
}
func (t *runTB) Skip(args ...any) { panic(stop{msg: fmt.Sprint(args...), skipped: true}) }
func (t *runTB) Skipf(format string, args ...any) {
	panic(stop{msg: fmt.Sprintf(format, args...), skipped: true})
}
func (t *runTB) SkipNow() { panic(stop{msg: "skipped", skipped: true}) }

// TempDir returns a new directory under the item's directory; the item's
// directory is removed when the run ends.
func (t *runTB) TempDir() string {
	t.mu.Lock()
	t.tmp++
	n := t.tmp
	t.mu.Unlock()
	d := filepath.Join(t.dir, fmt.Sprintf("tmp%03d", n))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	return d
}
