package metrics

import (
	"bytes"
	"errors"
	"math"
	"os"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux ABI; procfs, which client_golang uses, assumes the same).
const userHZ = 100

// newProcessCollector returns the process_* metrics of the standard
// client_golang process collector (same names, help, types and values) for
// this process, read from root ("/proc"). Where root/self/stat cannot be read
// (not Linux), it is the standard collector itself.
//
// Why not the standard one: with 1,000 workers it was 37 % of a scrape's
// CPU. Every scrape it re-read /proc/stat for the boot time (large on a
// many-core GPU host) to compute a start time that never changes, parsed
// /proc/self/limits with a scanner for two rlimits getrlimit(2) returns, and
// allocated a string for every field of net/netstat. This one reads the
// start time once, asks getrlimit, and parses stat and net/netstat from one
// reused buffer without allocating.
func newProcessCollector(root string) prometheus.Collector {
	c := &processCollector{
		root:     root,
		realProc: root == "/proc",
		pageSize: float64(os.Getpagesize()),
		buf:      make([]byte, 0, 8<<10),
		cpuTotal: prometheus.NewDesc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", nil, nil),
		openFDs:  prometheus.NewDesc("process_open_fds", "Number of open file descriptors.", nil, nil),
		maxFDs:   prometheus.NewDesc("process_max_fds", "Maximum number of open file descriptors.", nil, nil),
		vsize:    prometheus.NewDesc("process_virtual_memory_bytes", "Virtual memory size in bytes.", nil, nil),
		maxVsize: prometheus.NewDesc("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.", nil, nil),
		rss:      prometheus.NewDesc("process_resident_memory_bytes", "Resident memory size in bytes.", nil, nil),
		start:    prometheus.NewDesc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", nil, nil),
		inBytes:  prometheus.NewDesc("process_network_receive_bytes_total", "Number of bytes received by the process over the network.", nil, nil),
		outBytes: prometheus.NewDesc("process_network_transmit_bytes_total", "Number of bytes sent by the process over the network.", nil, nil),
	}
	st, err := c.readStat()
	if err != nil {
		return collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
	}
	// Like procfs: boot time from /proc/stat plus the start in clock ticks.
	// Both are fixed for the life of the process, so read once.
	if btime, err := c.bootTime(); err == nil {
		c.startTime = float64(btime) + float64(st.startTicks)/userHZ
		c.haveStart = true
	}
	return c
}

type processCollector struct {
	root      string
	realProc  bool // root is the kernel's procfs (directory sizes mean something)
	pageSize  float64
	startTime float64
	haveStart bool

	mu  sync.Mutex // guards buf: scrapes may run concurrently
	buf []byte

	cpuTotal, openFDs, maxFDs, vsize, maxVsize, rss, start, inBytes, outBytes *prometheus.Desc
}

func (c *processCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpuTotal, c.openFDs, c.maxFDs, c.vsize, c.maxVsize, c.rss, c.start, c.inBytes, c.outBytes} {
		ch <- d
	}
}

// Collect sends what it could read; like the standard collector without
// ReportErrors, a figure that cannot be read is left out.
func (c *processCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	st, stErr := c.readStat()
	in, out, netErr := c.readNetstat()
	fds, fdsErr := c.openFDCount()
	c.mu.Unlock()

	if stErr == nil {
		ch <- prometheus.MustNewConstMetric(c.cpuTotal, prometheus.CounterValue, float64(st.utime+st.stime)/userHZ)
		ch <- prometheus.MustNewConstMetric(c.vsize, prometheus.GaugeValue, float64(st.vsize))
		ch <- prometheus.MustNewConstMetric(c.rss, prometheus.GaugeValue, float64(st.rssPages)*c.pageSize)
		if c.haveStart {
			ch <- prometheus.MustNewConstMetric(c.start, prometheus.GaugeValue, c.startTime)
		}
	}
	if fdsErr == nil {
		ch <- prometheus.MustNewConstMetric(c.openFDs, prometheus.GaugeValue, float64(fds))
	}
	// The soft limits, as /proc/self/limits shows them; RLIM_INFINITY is
	// 2^64-1 there too.
	var nofile, as syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile) == nil && syscall.Getrlimit(syscall.RLIMIT_AS, &as) == nil {
		ch <- prometheus.MustNewConstMetric(c.maxFDs, prometheus.GaugeValue, float64(nofile.Cur))
		ch <- prometheus.MustNewConstMetric(c.maxVsize, prometheus.GaugeValue, float64(as.Cur))
	}
	if netErr == nil {
		ch <- prometheus.MustNewConstMetric(c.inBytes, prometheus.CounterValue, in)
		ch <- prometheus.MustNewConstMetric(c.outBytes, prometheus.CounterValue, out)
	}
}

// procStat holds the fields of /proc/self/stat the metrics need.
type procStat struct {
	utime, stime, startTicks, vsize, rssPages uint64
}

var errMalformed = errors.New("malformed proc file")

// readStat parses root/self/stat; c.mu must be held (or c unshared).
func (c *processCollector) readStat() (procStat, error) {
	b, err := c.readFile("self/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields we want follow its last ')'. Field 3 (state) is then the
	// first.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errMalformed
	}
	var st procStat
	field := 3
	for rest := bytes.TrimSpace(b[i+1:]); len(rest) > 0 && field <= 24; field++ {
		var f []byte
		f, rest, _ = bytes.Cut(rest, []byte{' '})
		var dst *uint64
		switch field {
		case 14:
			dst = &st.utime
		case 15:
			dst = &st.stime
		case 22:
			dst = &st.startTicks
		case 23:
			dst = &st.vsize
		case 24:
			dst = &st.rssPages
		default:
			continue
		}
		v, ok := parseUint(f)
		if !ok {
			return procStat{}, errMalformed
		}
		*dst = v
	}
	if field <= 24 {
		return procStat{}, errMalformed
	}
	return st, nil
}

// readNetstat returns InOctets and OutOctets of the IpExt lines of
// root/self/net/netstat (a header line of names, then one of values); c.mu
// must be held.
func (c *processCollector) readNetstat() (in, out float64, err error) {
	b, err := c.readFile("self/net/netstat")
	if err != nil {
		return 0, 0, err
	}
	prefix := []byte("IpExt:")
	var names, values []byte
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		if names == nil {
			names = line[len(prefix):]
			continue
		}
		values = line[len(prefix):]
		break
	}
	if values == nil {
		return 0, 0, errMalformed
	}
	// procfs leaves a counter it does not find at 0.
	found := 0
	for len(names) > 0 {
		var name, value []byte
		name, names, _ = bytes.Cut(bytes.TrimLeft(names, " "), []byte{' '})
		value, values, _ = bytes.Cut(bytes.TrimLeft(values, " "), []byte{' '})
		var dst *float64
		switch string(name) {
		case "InOctets":
			dst = &in
		case "OutOctets":
			dst = &out
		default:
			continue
		}
		v, ok := parseUint(value)
		if !ok {
			return 0, 0, errMalformed
		}
		*dst = float64(v)
		if found++; found == 2 {
			break
		}
	}
	return in, out, nil
}

// openFDCount counts the entries of root/self/fd: the size Linux 6.2 and
// later report for that directory, else by reading it into c.buf.
func (c *processCollector) openFDCount() (int, error) {
	dir := c.root + "/self/fd"
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0, err
	}
	if c.realProc && st.Size > 0 {
		return int(st.Size), nil
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(fd)
	n := 0
	buf := c.buf[:cap(c.buf)]
	for {
		got, err := syscall.ReadDirent(fd, buf)
		if err != nil {
			return 0, err
		}
		if got <= 0 {
			return n, nil
		}
		n += countDirents(buf[:got])
	}
}

// countDirents counts the linux_dirent64 records of b other than "." and
// "..": 8 bytes inode, 8 offset, 2 record length, 1 type, then the name.
func countDirents(b []byte) int {
	n := 0
	for len(b) >= 19 {
		reclen := int(b[16]) | int(b[17])<<8
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		if end := bytes.IndexByte(name, 0); end >= 0 {
			name = name[:end]
		}
		if string(name) != "." && string(name) != ".." {
			n++
		}
		b = b[reclen:]
	}
	return n
}

// bootTime reads btime from root/stat.
func (c *processCollector) bootTime() (uint64, error) {
	b, err := c.readFile("stat")
	if err != nil {
		return 0, err
	}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			if t, ok := parseUint(bytes.TrimSpace(v)); ok {
				return t, nil
			}
			return 0, errMalformed
		}
	}
	return 0, errMalformed
}

// readFile reads root/name into c.buf (grown as needed, kept for the next
// read) and returns it; the result is valid until the next read.
func (c *processCollector) readFile(name string) ([]byte, error) {
	fd, err := syscall.Open(c.root+"/"+name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: c.root + "/" + name, Err: err}
	}
	defer syscall.Close(fd)
	b := c.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := syscall.Read(fd, b[len(b):cap(b)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: c.root + "/" + name, Err: err}
		}
		if n == 0 {
			c.buf = b[:0]
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// parseUint parses decimal digits without allocating (strconv's error
// would keep a copy of the text).
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		if v > (math.MaxUint64-uint64(d-'0'))/10 {
			return 0, false // overflow
		}
		v = v*10 + uint64(d-'0')
	}
	return v, true
}
