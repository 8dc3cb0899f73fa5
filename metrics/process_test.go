package metrics

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// gatherOne gathers c alone, by family name.
func gatherOne(t testing.TB, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func value(mf *dto.MetricFamily) float64 {
	m := mf.GetMetric()[0]
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestProcessCollectorMatchesClientGolang: the same families (name, help,
// type, no labels) as client_golang's process collector, and the same
// values: the fixed ones equal, the moving ones between a read of the
// standard collector before and one after.
func TestProcessCollectorMatchesClientGolang(t *testing.T) {
	std := collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
	ours := newProcessCollector("/proc")
	if _, ok := ours.(*processCollector); !ok {
		t.Fatalf("on Linux the hive's own collector is used, got %T", ours)
	}

	before := gatherOne(t, std)
	got := gatherOne(t, ours)
	after := gatherOne(t, std)

	var wantNames, gotNames []string
	for n := range before {
		wantNames = append(wantNames, n)
	}
	for n := range got {
		gotNames = append(gotNames, n)
	}
	sort.Strings(wantNames)
	sort.Strings(gotNames)
	if strings.Join(gotNames, ",") != strings.Join(wantNames, ",") {
		t.Fatalf("families:\n got %v\nwant %v", gotNames, wantNames)
	}
	for name, want := range before {
		g := got[name]
		if g.GetHelp() != want.GetHelp() || g.GetType() != want.GetType() || len(g.GetMetric()) != 1 || len(g.GetMetric()[0].GetLabel()) != 0 {
			t.Errorf("%s: got %v", name, g)
			continue
		}
		v, lo, hi := value(g), value(want), value(after[name])
		switch name {
		case "process_max_fds", "process_virtual_memory_max_bytes":
			if v != lo {
				t.Errorf("%s = %v, client_golang says %v", name, v, lo)
			}
		case "process_start_time_seconds":
			// client_golang re-reads the boot time, which the kernel
			// derives from the wall clock: it may move by a second.
			if math.Abs(v-lo) > 1 {
				t.Errorf("%s = %v, client_golang says %v", name, v, lo)
			}
		case "process_cpu_seconds_total", "process_network_receive_bytes_total", "process_network_transmit_bytes_total":
			if v < lo || v > hi {
				t.Errorf("%s = %v, not within client_golang's %v before and %v after", name, v, lo, hi)
			}
		default: // fds and memory move either way; they must be plausible
			if v <= 0 {
				t.Errorf("%s = %v", name, v)
			}
		}
	}
}

// TestProcessCollectorCountsOpenFiles: open descriptors are counted, both
// from the directory size (Linux 6.2+) and by reading the directory.
func TestProcessCollectorCountsOpenFiles(t *testing.T) {
	c := newProcessCollector("/proc").(*processCollector)
	count := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		n, err := c.openFDCount()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n0 := count()
	for range 3 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if n := count(); n != n0+3 {
		t.Fatalf("after opening 3 files: %d descriptors, before %d", n, n0)
	}

	// The reading path, on a directory whose size says nothing (as before
	// Linux 6.2): "." and ".." are not descriptors.
	root := t.TempDir()
	dir := filepath.Join(root, "self", "fd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"0", "1", "2", "10", "255"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.root, c.realProc = root, false
	if n := count(); n != 5 {
		t.Fatalf("fake fd dir with 5 entries: counted %d", n)
	}
}

// fakeProc writes a /proc tree with the given stat, net/netstat and stat
// (boot time) contents; an empty string leaves the file out.
func fakeProc(t *testing.T, selfStat, netstat, stat string) string {
	t.Helper()
	root := t.TempDir()
	for path, body := range map[string]string{"self/stat": selfStat, "self/net/netstat": netstat, "stat": stat} {
		if body == "" {
			continue
		}
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "self", "fd"), 0o700); err != nil {
		t.Fatal(err)
	}
	return root
}

const (
	// A command name with spaces and parentheses; utime 250, stime 150,
	// starttime 12345, vsize 1000000, rss 300 pages.
	goodSelfStat = "4242 (rbee (hive) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 12 0 12345 1000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	goodNetstat  = "TcpExt: SyncookiesSent SyncookiesRecv\nTcpExt: 0 0\nIpExt: InNoRoutes InOctets OutOctets InMcastPkts\nIpExt: 0 123456 654321 7\n"
	goodStat     = "cpu  1 2 3 4\nbtime 1700000000\nprocesses 5\n"
)

func TestProcessCollectorParsesProcFiles(t *testing.T) {
	c := newProcessCollector(fakeProc(t, goodSelfStat, goodNetstat, goodStat))
	got := gatherOne(t, c)
	page := float64(os.Getpagesize())
	for name, want := range map[string]float64{
		"process_cpu_seconds_total":            4,
		"process_virtual_memory_bytes":         1000000,
		"process_resident_memory_bytes":        300 * page,
		"process_start_time_seconds":           1700000000 + 123.45,
		"process_network_receive_bytes_total":  123456,
		"process_network_transmit_bytes_total": 654321,
		"process_open_fds":                     0,
	} {
		mf, ok := got[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if v := value(mf); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
}

// TestProcessCollectorBrokenProcFiles: a figure that cannot be read or
// parsed is left out, the others are still served; without a readable
// self/stat the standard collector is used.
func TestProcessCollectorBrokenProcFiles(t *testing.T) {
	if _, ok := newProcessCollector(t.TempDir()).(*processCollector); ok {
		t.Fatal("without self/stat: want client_golang's collector")
	}

	cases := []struct {
		name                    string
		selfStat, netstat, stat string
		breakStat               bool // stat becomes unreadable after construction
		missing                 []string
		present                 []string
	}{
		{name: "no boot time", selfStat: goodSelfStat, netstat: goodNetstat, stat: "cpu 1 2 3\n",
			missing: []string{"process_start_time_seconds"}, present: []string{"process_cpu_seconds_total", "process_network_receive_bytes_total"}},
		{name: "garbled boot time", selfStat: goodSelfStat, netstat: goodNetstat, stat: "btime soon\n",
			missing: []string{"process_start_time_seconds"}, present: []string{"process_cpu_seconds_total"}},
		{name: "no netstat", selfStat: goodSelfStat, stat: goodStat,
			missing: []string{"process_network_receive_bytes_total", "process_network_transmit_bytes_total"},
			present: []string{"process_cpu_seconds_total", "process_start_time_seconds", "process_max_fds"}},
		{name: "netstat without values", selfStat: goodSelfStat, netstat: "IpExt: InOctets OutOctets\n", stat: goodStat,
			missing: []string{"process_network_receive_bytes_total"}, present: []string{"process_cpu_seconds_total"}},
		{name: "netstat garbled", selfStat: goodSelfStat, netstat: "IpExt: InOctets OutOctets\nIpExt: x 1\n", stat: goodStat,
			missing: []string{"process_network_receive_bytes_total"}, present: []string{"process_cpu_seconds_total"}},
		{name: "stat gone after start", selfStat: goodSelfStat, netstat: goodNetstat, stat: goodStat, breakStat: true,
			missing: []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"},
			present: []string{"process_network_receive_bytes_total", "process_max_fds"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeProc(t, tc.selfStat, tc.netstat, tc.stat)
			c := newProcessCollector(root)
			if tc.breakStat {
				if err := os.WriteFile(filepath.Join(root, "self", "stat"), []byte("4242 (truncated) S 1 2\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got := gatherOne(t, c)
			for _, name := range tc.missing {
				if _, ok := got[name]; ok {
					t.Errorf("%s served from a broken file", name)
				}
			}
			for _, name := range tc.present {
				if _, ok := got[name]; !ok {
					t.Errorf("%s missing", name)
				}
			}
		})
	}
}

func TestParseUint(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "42": 42, "18446744073709551615": math.MaxUint64} {
		if v, ok := parseUint([]byte(in)); !ok || v != want {
			t.Errorf("parseUint(%q) = %v, %v", in, v, ok)
		}
	}
	for _, in := range []string{"", "-1", "1.5", "18446744073709551616", "99999999999999999999", "12a"} {
		if v, ok := parseUint([]byte(in)); ok {
			t.Errorf("parseUint(%q) = %v, want an error", in, v)
		}
	}
}

// BenchmarkProcessCollector compares one collection of client_golang's
// process collector with the hive's, in the same run.
func BenchmarkProcessCollector(b *testing.B) {
	for _, bc := range []struct {
		name string
		c    prometheus.Collector
	}{
		{"client_golang", collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})},
		{"hive", newProcessCollector("/proc")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			ch := make(chan prometheus.Metric, 16)
			for b.Loop() {
				bc.c.Collect(ch)
				for len(ch) > 0 {
					<-ch
				}
			}
		})
	}
}
