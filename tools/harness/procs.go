package harness

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Proc is one process as /proc shows it.
type Proc struct {
	PID, PPID, PGID int
	State           byte   // R, S, D, Z, T, ...
	Cmdline         string // arguments joined by spaces
}

// Zombie reports whether the process has exited but is not reaped yet.
func (p Proc) Zombie() bool { return p.State == 'Z' }

// ReadProc reads one process; ok is false when it does not exist.
func ReadProc(pid int) (Proc, bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Proc{}, false
	}
	// The command name is in parentheses and may contain anything; the
	// fields after the last ')' are fixed.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Proc{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 3 {
		return Proc{}, false
	}
	p := Proc{PID: pid, State: f[0][0]}
	p.PPID, _ = strconv.Atoi(f[1])
	p.PGID, _ = strconv.Atoi(f[2])
	if cl, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); err == nil {
		p.Cmdline = strings.TrimSpace(string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '})))
	}
	return p, true
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	p, ok := ReadProc(pid)
	return ok && !p.Zombie()
}

// ProcsWithEnv lists the processes whose initial environment holds the
// exact entry (KEY=VALUE). Processes of other users are skipped (their
// environ is unreadable), which is fine: tests only look for their own.
func ProcsWithEnv(entry string) []Proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte(entry)
	self := os.Getpid()
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, want) {
				if p, ok := ReadProc(pid); ok {
					out = append(out, p)
				}
				break
			}
		}
	}
	return out
}

// killGroupAndPID sends SIGKILL to the process's group (when it leads one of
// its own) and to the process.
func killGroupAndPID(p Proc) {
	if p.PGID > 1 && p.PGID != syscall.Getpgrp() {
		_ = syscall.Kill(-p.PGID, syscall.SIGKILL)
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
}
