package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRowVerdicts(t *testing.T) {
	cases := []struct {
		row  Row
		pass bool
		ok   bool
	}{
		{Row{Measured: 96, Baseline: 100, Compare: CompareRatio, Target: &Target{On: "ratio", Op: ">=", Limit: 0.95}}, true, true},
		{Row{Measured: 94, Baseline: 100, Compare: CompareRatio, Target: &Target{On: "ratio", Op: ">=", Limit: 0.95}}, false, true},
		{Row{Measured: 9, Baseline: 5, Compare: CompareAdded, Target: &Target{On: "added", Op: "<", Limit: 5}}, true, true},
		{Row{Measured: 11, Baseline: 5, Compare: CompareAdded, Target: &Target{On: "added", Op: "<", Limit: 5}}, false, true},
		{Row{Measured: 1.9, Target: &Target{On: "measured", Op: "<", Limit: 2}}, true, true},
		{Row{Measured: 2, Target: &Target{On: "measured", Op: "<", Limit: 2}}, false, true},
		{Row{Measured: 1, Baseline: 0, Compare: CompareRatio, Target: &Target{On: "ratio", Op: ">=", Limit: 0.5}}, false, true}, // no baseline: not a pass
		{Row{Measured: 1}, false, false},
	}
	for i, c := range cases {
		pass, ok := c.row.Pass()
		if pass != c.pass || ok != c.ok {
			t.Errorf("case %d: Pass() = %t, %t; want %t, %t", i, pass, ok, c.pass, c.ok)
		}
	}
	if d := (Row{Measured: 1}).Delta(); !math.IsNaN(d) {
		t.Errorf("Delta without comparison = %v, want NaN", d)
	}
}

func sampleReport() *Report {
	return &Report{Rows: []Row{
		{Item: 1, Name: "provision", Unit: "MB/s", Measured: 950, Baseline: 1000, BaselineName: "GET+sha256",
			Compare: CompareRatio, Target: &Target{On: "ratio", Op: ">=", Limit: 0.95}, Note: "writes to disk"},
		{Item: 3, Name: "spawn p50", Unit: "ms", Measured: 12, Baseline: 5, BaselineName: "direct",
			Compare: CompareAdded, Target: &Target{On: "added", Op: "<", Limit: 5}},
		{Item: 7, Name: "rss idle", Unit: "MiB", Measured: 20},
	}, Errors: []ItemError{{Item: 5, Error: "boom"}}}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	cells := func(line string) []string { return regexp.MustCompile(` {2,}`).Split(strings.TrimSpace(line), -1) }
	lines := strings.Split(out, "\n")
	for i, want := range [][]string{
		{"#", "what", "measured", "baseline", "ratio/added", "target", "result"},
		{"1", "provision", "950 MB/s", "1000 MB/s (GET+sha256)", "0.95×", "ratio >= 0.95", "PASS"},
		{"3", "spawn p50", "12.0 ms", "5.00 ms (direct)", "+7.00 ms", "added < 5.00 ms", "MISS"},
		{"7", "rss idle", "20.0 MiB", "—", "—", "—", "info"},
	} {
		if got := cells(lines[i]); !slices.Equal(got, want) {
			t.Errorf("line %d = %q, want %q\n%s", i, got, want, out)
		}
	}
	for _, want := range []string{"item 5 FAILED: boom", "1 provision: writes to disk"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	want := "| # | what | measured | baseline | ratio/added | target | result |\n" +
		"|---|---|---:|---:|---:|---|---|\n" +
		"| 1 | provision | 950 MB/s | 1000 MB/s (GET+sha256) | 0.95× | ratio >= 0.95 | PASS |\n" +
		"| 3 | spawn p50 | 12.0 ms | 5.00 ms (direct) | +7.00 ms | added < 5.00 ms | MISS |\n" +
		"| 7 | rss idle | 20.0 MiB | — | — | — | info |\n" +
		"\nItem 5 did not finish: boom\n"
	if b.String() != want {
		t.Errorf("markdown:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rows []struct {
			Item  int      `json:"item"`
			Delta *float64 `json:"delta"`
			Pass  *bool    `json:"pass"`
		} `json:"rows"`
		Errors []ItemError `json:"errors"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if len(got.Rows) != 3 || len(got.Errors) != 1 {
		t.Fatalf("rows %d errors %d:\n%s", len(got.Rows), len(got.Errors), b.String())
	}
	r0, r1, r2 := got.Rows[0], got.Rows[1], got.Rows[2]
	if r0.Delta == nil || math.Abs(*r0.Delta-0.95) > 1e-9 || r0.Pass == nil || !*r0.Pass {
		t.Errorf("row 0 delta/pass wrong:\n%s", b.String())
	}
	if r1.Delta == nil || *r1.Delta != 7 || r1.Pass == nil || *r1.Pass {
		t.Errorf("row 1 delta/pass wrong:\n%s", b.String())
	}
	if r2.Delta != nil || r2.Pass != nil {
		t.Errorf("row 2 has delta or pass without comparison or target:\n%s", b.String())
	}
	if !sampleReport().Failed() {
		t.Error("report with a failed item and a missed target is not Failed")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 99: 99, 100: 100, 1: 1, 0: 1} {
		if got := percentile(ds, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
	if m := median([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
}

func TestGaps(t *testing.T) {
	log := "rbee-ref start 1000000\nnoise\nrbee-ref exit 2000000\nrbee-ref start 5000000\nrbee-ref exit 9000000\nrbee-ref start 12000000\n"
	starts, exits := lifeStamps(log)
	if len(starts) != 3 || len(exits) != 2 {
		t.Fatalf("starts %v exits %v", starts, exits)
	}
	readies := []time.Time{time.Unix(0, 1500000), time.Unix(0, 7000000), time.Unix(0, 15000000)}
	relaunch, ready := gaps(exits, starts, readies, time.Millisecond)
	want := []time.Duration{2 * time.Millisecond, 2 * time.Millisecond}
	wantReady := []time.Duration{4 * time.Millisecond, 5 * time.Millisecond}
	for i := range want {
		if relaunch[i] != want[i] || ready[i] != wantReady[i] {
			t.Errorf("gap %d: relaunch %v ready %v, want %v %v", i, relaunch[i], ready[i], want[i], wantReady[i])
		}
	}
}

func TestWanted(t *testing.T) {
	if !wanted([]int{7}, 5) || !wanted([]int{7}, 6) || wanted([]int{7}, 1) || !wanted([]int{1, 3}, 3) {
		t.Error("wanted: item 7 runs 5 and 6; listed items run")
	}
}

// TestQuickSmoke runs two items of the real tool in -quick mode. It builds
// the binaries and takes several seconds, so CI leaves it out: set
// RBEE_BENCH_SMOKE=1 to run it.
func TestQuickSmoke(t *testing.T) {
	if os.Getenv("RBEE_BENCH_SMOKE") == "" {
		t.Skip("set RBEE_BENCH_SMOKE=1 to run the quick benchmark smoke test")
	}
	rep, err := Run(context.Background(), Options{Only: []int{2, 3}, Quick: true, Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("items failed: %+v", rep.Errors)
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if r.Measured <= 0 || r.Baseline <= 0 {
			t.Errorf("row %q: measured %v baseline %v", r.Name, r.Measured, r.Baseline)
		}
	}
}
