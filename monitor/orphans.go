package monitor

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Finding a worker's process that no record names.
//
// A hive killed between starting a worker's process and recording its pid
// leaves a process the next hive's records do not name: for a spawn, no
// record at all; for a relaunch, a record naming the previous process (or
// none). Two things close that window without putting an fsync in front of
// the exec:
//
//   - Before a spawn's first exec, a marker .<worker_id>.spawning is
//     created in the log directory (not synced) and removed once the record
//     is durable. The danger is a hive that dies while the kernel lives on:
//     the marker, in the page cache, is then there for the next hive. A
//     power loss or kernel crash ends the workers too, so a lost marker
//     never hides one. Writing the record itself before the exec would
//     put its fsync, which now overlaps the worker's startup, in front of
//     every spawn: measured, that made spawn -> ready slower.
//   - Re-adoption looks for the processes of every record whose process is
//     unknown (pid 0, or gone, or reused) and of every marker without a
//     record, in one pass over /proc, and only when there is one: a restart
//     that finds every recorded process alive reads nothing more.
//
// A process is recognised by RBEE_WORKER_ID=<id> in /proc/<pid>/environ,
// which the monitor puts in every worker's environment. Its stdout (fd 1 on
// <id>.log) would do too, but a worker that daemonizes points its standard
// descriptors at /dev/null, while its environment, as the kernel recorded
// it at exec, survives a re-exec, a daemonizing fork and setenv alike, and
// is inherited by its children. The environment also holds the worker's
// token, so an adopted process authenticates even when its token's hash
// never reached the record. A process's start time is read before and after
// its environment: a pid reused meanwhile is left alone.

// markerPath is the spawn marker of worker id.
func (m *Monitor) markerPath(id string) string { return m.logDir + "/." + id + ".spawning" }

const markerSuffix = ".spawning"

// orphanKillWait bounds the wait for a killed process to end.
const orphanKillWait = 5 * time.Second

// writeMarker creates worker id's spawn marker (no fsync: see above): a
// hard link to its log file, which exists by then. A link makes no inode:
// creating a file measured 0.7 to 1.3 ms on the ext4 of the development
// VM, as long as the worker's whole start; a link 12 µs. Where links are
// not supported, an empty file does.
func (m *Monitor) writeMarker(id, logPath string) error {
	err := os.Link(logPath, m.markerPath(id))
	if err == nil || errors.Is(err, fs.ErrExist) {
		return nil
	}
	f, err := os.OpenFile(m.markerPath(id), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

func (m *Monitor) removeMarker(id string) {
	if err := os.Remove(m.markerPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("remove spawn marker", "worker_id", id, "err", err)
	}
}

// spawnMarkers lists the worker ids whose spawn markers are in the log
// directory.
func (m *Monitor) spawnMarkers() []string {
	ents, err := os.ReadDir(m.logDir)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") && strings.HasSuffix(name, markerSuffix) {
			ids = append(ids, strings.TrimSuffix(name[1:], markerSuffix))
		}
	}
	return ids
}

// foundProc is a live process that carries a worker's id.
type foundProc struct {
	pid, pgid int
	startTime uint64
	tokenHash string // of its RBEE_WORKER_TOKEN; "" when it has none
}

// leader is the found process that leads its own group, as every process
// the monitor starts does (Setpgid), or nil.
func leader(found []foundProc) *foundProc {
	for i := range found {
		if found[i].pid == found[i].pgid {
			return &found[i]
		}
	}
	return nil
}

// scanWorkerProcesses returns the live processes of this user whose
// environment names one of the worker ids in want, by id.
func scanWorkerProcesses(want map[string]bool) map[string][]foundProc {
	out := make(map[string][]foundProc)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	uid, self := uint32(os.Getuid()), os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := "/proc/" + e.Name()
		var st unix.Stat_t
		if unix.Stat(dir, &st) != nil || st.Uid != uid {
			continue // someone else's: its environment is not ours to read
		}
		pi, err := procStat(pid)
		if err != nil || !pi.alive {
			continue
		}
		env, err := os.ReadFile(dir + "/environ")
		if err != nil {
			continue
		}
		id := envValue(env, "RBEE_WORKER_ID")
		if id == "" || !want[id] {
			continue
		}
		if again, err := procStat(pid); err != nil || !again.alive || again.start != pi.start {
			continue // ended, or the pid was reused while we read
		}
		f := foundProc{pid: pid, pgid: pi.pgid, startTime: pi.start}
		if tok := envValue(env, "RBEE_WORKER_TOKEN"); tok != "" {
			f.tokenHash = hashToken(tok)
		}
		out[id] = append(out[id], f)
	}
	return out
}

// envValue returns the value of key in a NUL-separated environment block
// (the last one, as os/exec keeps the last of duplicates).
func envValue(env []byte, key string) string {
	val := ""
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if len(kv) > len(key) && kv[len(key)] == '=' && string(kv[:len(key)]) == key {
			val = string(kv[len(key)+1:])
		}
	}
	return val
}

// procInfo is what /proc/<pid>/stat says of a process.
type procInfo struct {
	start uint64 // field 22, clock ticks since boot
	ppid  int    // field 4
	pgid  int    // field 5
	alive bool   // not a zombie
}

func procStat(pid int) (procInfo, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, err
	}
	malformed := errors.New("/proc/" + strconv.Itoa(pid) + "/stat: malformed")
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, malformed
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return procInfo{}, malformed
	}
	var pi procInfo
	if pi.ppid, err = strconv.Atoi(string(f[1])); err != nil {
		return procInfo{}, malformed
	}
	if pi.pgid, err = strconv.Atoi(string(f[2])); err != nil {
		return procInfo{}, malformed
	}
	if pi.start, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return procInfo{}, malformed
	}
	pi.alive = f[0][0] != 'Z' && f[0][0] != 'X'
	return pi, nil
}

// descendantOf reports whether pid is ancestor or runs below it.
func descendantOf(pid, ancestor int) bool {
	for range 64 { // a bound, in case the tree changes under us
		if pid == ancestor {
			return true
		}
		if pid <= 1 {
			return false
		}
		pi, err := procStat(pid)
		if err != nil {
			return false
		}
		pid = pi.ppid
	}
	return false
}

// killFound kills found processes (and the groups of those that lead one)
// and waits, up to a few seconds each, until they have ended (reaping any
// that are children of this process).
func (m *Monitor) killFound(found []foundProc) {
	var ps []*process
	for _, f := range found {
		p, err := m.adoptProcess(f.pid, f.startTime)
		if err != nil {
			continue // gone already, or not the process we read
		}
		p.kill()
		ps = append(ps, p)
	}
	for _, p := range ps {
		waitFor(m.ctx, p.exited, orphanKillWait)
	}
}

// kill sends SIGKILL to the process's group, when it leads one, and to the
// process itself through its pidfd (it need not lead a group).
func (p *process) kill() {
	if p.pid == p.pgid() {
		p.signalGroup(syscall.SIGKILL)
	}
	p.signalSelf(unix.SIGKILL)
}

// pgid returns the process's group now (0 when it cannot be read).
func (p *process) pgid() int {
	pi, err := procStat(p.pid)
	if err != nil {
		return 0
	}
	return pi.pgid
}
