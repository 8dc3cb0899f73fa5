package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is one OS process of a worker: started by this monitor or
// re-adopted from a previous hive. Its exit is watched through a pidfd, by
// the monitor's exitWatcher.
type process struct {
	pid       int // also its process group id
	startTime uint64
	startedAt time.Time
	child     bool // started by this monitor (else re-adopted)
	pidfd     int  // owned by the exit watcher once watched
	watcher   *exitWatcher
	watchID   uint64 // the watcher's key for it

	exited chan struct{} // closed once the process has ended (and was reaped, if ours)
	ctx    context.Context
	cancel context.CancelFunc

	// Valid after exited is closed.
	known  bool // the exit status is known (not for re-adopted workers)
	code   int
	signal string

	unhealthy   atomic.Bool // killed for failing health probes
	startFailed atomic.Bool // killed for not becoming ready in time
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// signalGroup sends sig to the process's whole group. ESRCH (the group is
// gone) is not an error.
func (p *process) signalGroup(sig syscall.Signal) {
	if p.pid <= 1 {
		return // never kill(0) or kill(-1): that is our own group or everyone
	}
	if err := unix.Kill(-p.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		// EPERM would mean the pid now names someone else's group: leave it.
		_ = err
	}
}

// startProcess starts argv in its own process group with stdout and stderr
// going to logf (on the forker thread when the worker gets a parent-death
// signal), and begins watching its exit.
func (m *Monitor) startProcess(argv, env []string, logf *os.File) (*process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	if cmd.Err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpawnFailed, cmd.Err)
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf // an *os.File: no copying goroutine, and the file outlives the hive
	pidfd := -1
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd}
	if !m.cfg.Persistent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	var startErr error
	if m.cfg.Persistent {
		// No parent-death signal to tie to a thread: start from this
		// goroutine and spare the hand-off to the forker thread, which
		// costs a wake-up of that thread (tens of microseconds, a few
		// milliseconds on a busy machine) on every spawn and relaunch.
		startErr = cmd.Start()
	} else if err := m.onForker(func() { startErr = cmd.Start() }); err != nil {
		return nil, err
	}
	if startErr != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpawnFailed, startErr)
	}
	pid := cmd.Process.Pid
	if pidfd < 0 {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, fmt.Errorf("%w: pidfd: %v", ErrSpawnFailed, err)
		}
		pidfd = fd
	}
	// We reap through the pidfd; os/exec keeps its own handle, not needed.
	_ = cmd.Process.Release()
	st, _ := procStartTime(pid)
	return m.watchProcess(pid, pidfd, st, true)
}

// adoptProcess watches a process this monitor did not start, if pid still
// names the process that started at startTime.
func (m *Monitor) adoptProcess(pid int, startTime uint64) (*process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// Checked with the pidfd open: it names one process, whatever
	// happens to the pid number from now on.
	if st, err := procStartTime(pid); err != nil || st != startTime {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d: not the process that started at %d", pid, startTime)
	}
	return m.watchProcess(pid, fd, startTime, false)
}

func (m *Monitor) watchProcess(pid, fd int, startTime uint64, child bool) (*process, error) {
	p := &process{pid: pid, startTime: startTime, startedAt: time.Now(), child: child,
		pidfd: fd, exited: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(m.ctx)
	if err := m.exits.watch(p); err != nil {
		p.cancel()
		unix.Close(fd)
		if child {
			// Nobody would see it end: end it now rather than leave it.
			p.signalGroup(syscall.SIGKILL)
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, 0, nil)
		}
		return nil, err
	}
	return p, nil
}

// release lets go of a process without waiting for it (detach).
func (p *process) release() { p.watcher.forget(p) }

// procStartTime reads field 22 of /proc/<pid>/stat: the start time in clock
// ticks since boot, which tells a process from a later one with its pid.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	fields := bytes.Fields(b[i+1:]) // fields[0] is field 3 (state)
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
}
