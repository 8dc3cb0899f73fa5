package monitor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startWatcher runs an exit watcher for the test; the cleanup closes it and
// waits for its goroutine. done is closed when run returns.
func startWatcher(t *testing.T) (x *exitWatcher, done <-chan struct{}) {
	t.Helper()
	x, err := newExitWatcher()
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		x.run()
	}()
	t.Cleanup(func() {
		x.close()
		<-ran
	})
	return x, ran
}

// sleeper starts `sleep 60` in its own group, as startProcess does, and
// returns it unwatched. The cleanup kills and reaps it if still there.
func sleeper(t *testing.T) *process {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	fd := -1
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, PidFD: &fd}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	t.Cleanup(func() {
		_ = unix.Kill(-pid, syscall.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil) // ECHILD at once if the watcher reaped it
	})
	p := &process{pid: pid, child: true, pidfd: fd, exited: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

func awaitExited(t *testing.T, p *process) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("exit of pid %d not seen", p.pid)
	}
}

func TestExitWatcherSeesEveryExit(t *testing.T) {
	x, _ := startWatcher(t)
	// More than one epoll_wait buffer's worth, all exiting at once.
	procs := make([]*process, 2*len(x.buf)+3)
	for i := range procs {
		procs[i] = sleeper(t)
		if err := x.watch(procs[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range procs {
		sig := syscall.SIGKILL
		if i%2 == 1 {
			sig = syscall.SIGTERM
		}
		if err := unix.Kill(p.pid, sig); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range procs {
		awaitExited(t, p)
		want := "SIGKILL"
		if i%2 == 1 {
			want = "SIGTERM"
		}
		if !p.known || p.signal != want || p.code != -1 {
			t.Errorf("pid %d: known %v, signal %q, code %d; want a known exit by %s", p.pid, p.known, p.signal, p.code, want)
		}
		if p.ctx.Err() == nil {
			t.Errorf("pid %d: context not cancelled after the exit", p.pid)
		}
		// Reaped: no zombie left.
		var ws unix.WaitStatus
		if _, err := unix.Wait4(p.pid, &ws, unix.WNOHANG, nil); !errors.Is(err, unix.ECHILD) {
			t.Errorf("pid %d: wait4 after the exit = %v, want ECHILD (reaped)", p.pid, err)
		}
	}
	x.mu.Lock()
	left := len(x.procs)
	x.mu.Unlock()
	if left != 0 {
		t.Errorf("%d processes still watched after every exit", left)
	}
}

// A forgotten (detached) process's pidfd number is reused by the next
// process watched: the old process's end must not be taken for the new one's.
func TestExitWatcherForgetThenReuse(t *testing.T) {
	x, _ := startWatcher(t)
	a := sleeper(t)
	if err := x.watch(a); err != nil {
		t.Fatal(err)
	}
	x.forget(a)
	if a.ctx.Err() == nil {
		t.Error("forget left the process's context live")
	}
	if err := unix.Kill(a.pid, 0); err != nil {
		t.Fatalf("forget signalled the process: %v", err)
	}
	b := sleeper(t)
	if b.pidfd != a.pidfd {
		t.Logf("pidfd %d not reused (was %d): the test is weaker", b.pidfd, a.pidfd)
	}
	if err := x.watch(b); err != nil {
		t.Fatal(err)
	}
	_ = unix.Kill(a.pid, syscall.SIGKILL)
	var ws unix.WaitStatus
	if _, err := unix.Wait4(a.pid, &ws, 0, nil); err != nil {
		t.Fatalf("reap the forgotten process: %v", err)
	}
	select {
	case <-a.exited:
		t.Error("a forgotten process's exit was announced")
	default:
	}
	if b.hasExited() {
		t.Fatal("the forgotten process's exit was taken for the new one's")
	}
	_ = unix.Kill(b.pid, syscall.SIGKILL)
	awaitExited(t, b)
	if !b.known || b.signal != "SIGKILL" {
		t.Errorf("new process: known %v, signal %q", b.known, b.signal)
	}
	x.forget(b) // after the exit: nothing to do
}

// Closing the watcher lets go of what it still watches, and it takes no
// more.
func TestExitWatcherClose(t *testing.T) {
	x, done := startWatcher(t)
	p := sleeper(t)
	if err := x.watch(p); err != nil {
		t.Fatal(err)
	}
	x.close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end at close")
	}
	if p.ctx.Err() == nil {
		t.Error("close left a watched process's context live")
	}
	if p.hasExited() {
		t.Error("close announced an exit")
	}
	if err := unix.Kill(p.pid, 0); err != nil {
		t.Errorf("close signalled the process: %v", err)
	}
	if err := x.watch(sleeper(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("watch after close = %v, want ErrClosed", err)
	}
	x.close() // twice: harmless
}

// signalSelf reaches a watched process through its pidfd, and does nothing
// once the watcher let go of the pidfd (exit seen, or forgotten).
func TestExitWatcherSignalSelf(t *testing.T) {
	x, _ := startWatcher(t)
	p := sleeper(t)
	if err := x.watch(p); err != nil {
		t.Fatal(err)
	}
	p.signalSelf(unix.SIGKILL)
	awaitExited(t, p)
	if !p.known || p.signal != "SIGKILL" {
		t.Errorf("known %v, signal %q; want killed by SIGKILL", p.known, p.signal)
	}
	p.signalSelf(unix.SIGKILL) // the fd is closed: nothing to do

	q := sleeper(t)
	if err := x.watch(q); err != nil {
		t.Fatal(err)
	}
	x.forget(q)
	q.signalSelf(unix.SIGKILL)
	time.Sleep(20 * time.Millisecond) // a SIGKILL, had one been sent, lands at once; not a timing assertion on success
	b, err := os.ReadFile("/proc/" + strconv.Itoa(q.pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, ')'); i < 0 || len(b) < i+3 || b[i+2] == 'Z' {
		t.Errorf("a forgotten process was signalled: %s", b)
	}
}
