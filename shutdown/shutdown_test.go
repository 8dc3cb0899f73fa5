package shutdown

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// recorder is a WorkerStopper that records what the coordinator asked, in
// order with the hooks, and can block StopAll until its context ends.
type recorder struct {
	mu       sync.Mutex
	calls    []string
	deadline time.Time
	block    bool
	entered  chan struct{}
}

func newRecorder(block bool) *recorder { return &recorder{block: block, entered: make(chan struct{})} }

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) StopAll(ctx context.Context) {
	r.mu.Lock()
	r.calls = append(r.calls, "stop")
	r.deadline, _ = ctx.Deadline()
	r.mu.Unlock()
	close(r.entered)
	if r.block {
		<-ctx.Done()
	}
}

func (r *recorder) Detach() { r.add("detach") }

func runAsync(t *testing.T, c *Coordinator, ctx context.Context) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		c.RequestShutdown("test cleanup")
	})
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestRequestDrainsInOrder(t *testing.T) {
	rec := newRecorder(false)
	c := New(Config{Timeout: time.Hour, Logger: quiet}, rec,
		func() { rec.add("cancel downloads") }, func() { rec.add("publish") })
	if c.ShuttingDown() || c.Reason() != "" {
		t.Fatal("shutting down before any request")
	}
	select {
	case <-c.Requested():
		t.Fatal("Requested closed before any request")
	default:
	}
	before := time.Now()
	done := runAsync(t, c, t.Context())
	c.RequestShutdown("admin endpoint")
	c.RequestShutdown("again") // idempotent, never blocks
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !c.ShuttingDown() || c.Reason() != "admin endpoint" {
		t.Errorf("ShuttingDown %v reason %q", c.ShuttingDown(), c.Reason())
	}
	<-c.Requested()
	if got, want := rec.get(), []string{"cancel downloads", "publish", "stop"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if rec.deadline.Before(before.Add(time.Hour)) || rec.deadline.After(time.Now().Add(time.Hour)) {
		t.Errorf("StopAll deadline %v is not shutdown.timeout from the request", rec.deadline)
	}
	if err := c.Run(t.Context()); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run: %v", err)
	}
}

func TestLeaveWorkersDetaches(t *testing.T) {
	rec := newRecorder(false)
	c := New(Config{LeaveWorkers: true, Logger: quiet}, rec, func() { rec.add("hook") })
	done := runAsync(t, c, t.Context())
	c.RequestShutdown("upgrade")
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.get(), []string{"hook", "detach"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

// guardSignal keeps a test signal from taking the default action (killing
// the test binary) whatever the coordinator does.
func guardSignal(t *testing.T, sig os.Signal) {
	guard := make(chan os.Signal, 8)
	signal.Notify(guard, sig)
	t.Cleanup(func() { signal.Stop(guard) })
}

func kill(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
}

func TestSIGTERM(t *testing.T) {
	guardSignal(t, syscall.SIGTERM)
	rec := newRecorder(false)
	c := New(Config{Logger: quiet}, rec) // default signals
	done := runAsync(t, c, t.Context())
	kill(t, syscall.SIGTERM)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if !c.ShuttingDown() || c.Reason() != "signal terminated" {
		t.Errorf("reason %q", c.Reason())
	}
	if got := rec.get(); !slices.Equal(got, []string{"stop"}) {
		t.Errorf("calls %q", got)
	}
}

func TestSecondSignalCutsTheDrainShort(t *testing.T) {
	guardSignal(t, syscall.SIGUSR1)
	rec := newRecorder(true) // stops only when its context ends
	c := New(Config{Timeout: time.Hour, Logger: quiet, Signals: []os.Signal{syscall.SIGUSR1}}, rec)
	done := runAsync(t, c, t.Context())
	kill(t, syscall.SIGUSR1)
	<-rec.entered
	kill(t, syscall.SIGUSR1)
	if err := wait(t, done); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Run = %v, want ErrInterrupted", err)
	}
}

func TestDeadline(t *testing.T) {
	rec := newRecorder(true)
	c := New(Config{Timeout: 50 * time.Millisecond, Logger: quiet}, rec)
	done := runAsync(t, c, t.Context())
	c.RequestShutdown("test")
	if err := wait(t, done); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want DeadlineExceeded", err)
	}
}

func TestHookOverrunningTheDeadlineStillStopsWorkers(t *testing.T) {
	rec := newRecorder(false)
	release := make(chan struct{})
	hookDone := make(chan struct{})
	c := New(Config{Timeout: 50 * time.Millisecond, Logger: quiet}, rec,
		func() { defer close(hookDone); <-release }, // a download that will not cancel
		func() { rec.add("never reached in time") },
	)
	t.Cleanup(func() { close(release); <-hookDone })
	done := runAsync(t, c, t.Context())
	c.RequestShutdown("test")
	if err := wait(t, done); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want DeadlineExceeded", err)
	}
	if got := rec.get(); !slices.Equal(got, []string{"stop"}) {
		t.Errorf("calls %q, want the workers stopped", got)
	}
}

func TestPanickingHook(t *testing.T) {
	rec := newRecorder(false)
	c := New(Config{Logger: quiet}, rec, func() { panic("boom") }, func() { rec.add("next") })
	done := runAsync(t, c, t.Context())
	c.RequestShutdown("test")
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if got := rec.get(); !slices.Equal(got, []string{"next", "stop"}) {
		t.Errorf("calls %q", got)
	}
}

func TestContextEndsBeforeAnyRequest(t *testing.T) {
	rec := newRecorder(false)
	c := New(Config{Logger: quiet}, rec)
	ctx, cancel := context.WithCancel(t.Context())
	done := runAsync(t, c, ctx)
	cancel()
	if err := wait(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if got := rec.get(); len(got) != 0 || c.ShuttingDown() {
		t.Errorf("drained without a request: %q", got)
	}
}

type nilStopper struct{}

func (*nilStopper) StopAll(context.Context) { panic("called") }
func (*nilStopper) Detach()                 { panic("called") }

func TestNoWorkers(t *testing.T) {
	var typedNil *nilStopper
	for _, w := range []WorkerStopper{nil, typedNil} {
		c := New(Config{Logger: quiet}, w)
		done := runAsync(t, c, t.Context())
		c.RequestShutdown("test")
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
	}
}

// procStopper stops real child processes the way the monitor does: all in
// parallel, SIGTERM, then SIGKILL when the context ends.
type procStopper struct{ cmds []*exec.Cmd }

func (p *procStopper) StopAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, cmd := range p.cmds {
		wg.Go(func() {
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-ctx.Done():
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	wg.Wait()
}

func (p *procStopper) Detach() {}

// start runs script, which prints a line once it is set up, and waits for
// that line.
func start(t *testing.T, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	return cmd
}

func TestRealProcessesStopWithinTheDeadline(t *testing.T) {
	p := &procStopper{}
	for range 4 {
		p.cmds = append(p.cmds, start(t, "echo ready; exec sleep 60"))
	}
	c := New(Config{Timeout: 20 * time.Second, Logger: quiet}, p)
	done := runAsync(t, c, t.Context())
	c.RequestShutdown("test")
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range p.cmds {
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("process %d: %v, want ended by SIGTERM", i, cmd.ProcessState)
		}
	}

	// One that ignores SIGTERM is killed when the deadline passes, and Run
	// says the drain overran.
	p = &procStopper{cmds: []*exec.Cmd{start(t, "trap '' TERM; echo ready; while :; do sleep 0.05; done"), start(t, "echo ready; exec sleep 60")}}
	c = New(Config{Timeout: 300 * time.Millisecond, Logger: quiet}, p)
	done = runAsync(t, c, t.Context())
	c.RequestShutdown("test")
	if err := wait(t, done); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want DeadlineExceeded", err)
	}
	if ws := p.cmds[0].ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("stubborn process: %v, want SIGKILL", p.cmds[0].ProcessState)
	}
}
