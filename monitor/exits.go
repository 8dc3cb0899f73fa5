package monitor

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitWatcher sees the exit of every watched process with one goroutine:
// the processes' pidfds are in an epoll instance of its own, and that
// instance, pollable itself, waits in the runtime's poller (no thread held).
// One goroutine per process did the same, but with 1,000 workers its
// stacks alone were about 4 MB, which the GC goal doubles in the RSS.
type exitWatcher struct {
	ep   *os.File            // the epoll instance; closing it ends run
	epfd int                 // its number, for epoll_ctl (File.Fd would make it blocking)
	buf  [64]unix.EpollEvent // run's only

	mu     sync.Mutex
	procs  map[uint64]*process // by registration id, the epoll events' data
	nextID uint64
	closed bool
}

func newExitWatcher() (*exitWatcher, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll nonblock: %w", err)
	}
	return &exitWatcher{ep: os.NewFile(uintptr(fd), "epoll:exits"), epfd: fd, procs: make(map[uint64]*process)}, nil
}

// watch has p's exit seen; from then on the watcher owns p.pidfd (and
// closes it). It fails once the watcher is closed.
func (x *exitWatcher) watch(p *process) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return ErrClosed
	}
	x.nextID++
	id := x.nextID
	// The data is an id, not the fd: an event read just before a detach
	// must not name the next process that gets the same fd number.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := unix.EpollCtl(x.epfd, unix.EPOLL_CTL_ADD, p.pidfd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add pidfd %d: %w", p.pid, err)
	}
	p.watcher, p.watchID = x, id
	x.procs[id] = p
	return nil
}

// forget stops watching p and closes its pidfd without waiting for the
// process (detach). It does nothing once p's exit was seen.
func (x *exitWatcher) forget(p *process) {
	x.mu.Lock()
	if x.procs[p.watchID] == p {
		x.dropLocked(p)
	}
	x.mu.Unlock()
	p.cancel()
}

// signalSelf sends sig to p itself through its pidfd, while the watcher
// holds that (after the exit was seen, or after forget, the fd may be closed
// or name another process by now; and an ended process needs no signal).
func (p *process) signalSelf(sig unix.Signal) {
	x := p.watcher
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.procs[p.watchID] == p {
		_ = unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	}
}

// dropLocked takes p out of the epoll set (before its fd is closed and its
// number reused) and closes the pidfd.
func (x *exitWatcher) dropLocked(p *process) {
	delete(x.procs, p.watchID)
	_ = unix.EpollCtl(x.epfd, unix.EPOLL_CTL_DEL, p.pidfd, nil)
	_ = unix.Close(p.pidfd)
}

// run handles exits until close. Its owner is the Monitor.
func (x *exitWatcher) run() {
	rc, err := x.ep.SyscallConn()
	if err != nil {
		return
	}
	// The function returns false always: handle what is ready, then wait
	// again; Read returns when the epoll file is closed.
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), x.buf[:], 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n == 0 {
				return false
			}
			for _, ev := range x.buf[:n] {
				id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				x.mu.Lock()
				p := x.procs[id]
				if p != nil {
					delete(x.procs, id)
					_ = unix.EpollCtl(int(fd), unix.EPOLL_CTL_DEL, p.pidfd, nil)
				}
				x.mu.Unlock()
				if p != nil {
					p.reap() // a zombie by now: nothing in it blocks
				}
			}
			if n < len(x.buf) {
				return false
			}
		}
	})
}

// close ends run and lets go of the processes still watched, as forget
// does.
func (x *exitWatcher) close() {
	x.mu.Lock()
	x.closed = true
	left := slices.Collect(maps.Values(x.procs))
	for _, p := range left {
		x.dropLocked(p)
	}
	x.mu.Unlock()
	for _, p := range left {
		p.cancel()
	}
	_ = x.ep.Close() // after the unlock: it waits for run's handling to finish
}

// reap finishes an exited process: kill what is left of its group, collect
// its status (if it is ours), close the pidfd and announce the exit.
func (p *process) reap() {
	// The process is a zombie now (when ours), so its pid, and with it the
	// group id, cannot be reused: kill what is left of the group first.
	p.signalGroup(syscall.SIGKILL)
	var ws unix.WaitStatus
	opts := 0
	if !p.child {
		// Not started by us: reap only if it is our child after all (a
		// monitor dropped in this process); never block on someone else's.
		opts = unix.WNOHANG
	}
	for {
		wpid, err := unix.Wait4(p.pid, &ws, opts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err == nil && wpid == p.pid {
			p.known = true
			if ws.Signaled() {
				p.signal = unix.SignalName(ws.Signal())
				p.code = -1
			} else {
				p.code = ws.ExitStatus()
			}
		}
		break
	}
	_ = unix.Close(p.pidfd)
	p.cancel() // its probes end with it
	close(p.exited)
}
