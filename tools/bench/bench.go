// Package bench measures the whole rbee-hive daemon at what it exists for:
// provisioning, spawning, restarting, serving its API, shutting down, and
// staying small. It builds and runs the real binaries through tools/harness
// (HTTP over 127.0.0.1, real processes), measures each figure beside a
// baseline taken in the same run, and renders a table and a JSON report.
// The command is tools/cmd/bench; BENCHMARKS.md holds the results.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// Options choose what runs and how long.
type Options struct {
	// Only lists the items (1..7) to run; empty runs them all.
	Only []int
	// Quick shrinks every item (small file, few workers, few iterations)
	// for a smoke run of well under a minute.
	Quick bool
	// Dir holds the items' files (caches, state dirs); "" makes a temporary
	// directory that is removed afterwards.
	Dir string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// Target is the bound a figure must meet.
type Target struct {
	On    string  `json:"on"`    // "measured", "ratio" or "added"
	Op    string  `json:"op"`    // "<" or ">="
	Limit float64 `json:"limit"` // in the row's unit for measured/added
}

func (t Target) String(unit string) string {
	lim := formatValue(t.Limit, unit)
	if t.On == "ratio" {
		lim = fmt.Sprintf("%.2f", t.Limit)
	}
	on := map[string]string{"measured": "", "ratio": "ratio ", "added": "added "}[t.On]
	return fmt.Sprintf("%s%s %s", on, t.Op, lim)
}

// Comparisons of measured with baseline.
const (
	CompareRatio = "ratio" // measured / baseline
	CompareAdded = "added" // measured - baseline
)

// Row is one figure of the table.
type Row struct {
	Item     int     `json:"item"`
	Name     string  `json:"name"`
	Unit     string  `json:"unit"` // "MB/s", "ms", "req/s", "MiB", "%"
	Measured float64 `json:"measured"`
	Baseline float64 `json:"baseline"`
	// BaselineName says what the baseline is.
	BaselineName string  `json:"baseline_name"`
	Compare      string  `json:"compare"` // CompareRatio, CompareAdded or "" (none)
	Target       *Target `json:"target,omitempty"`
	Note         string  `json:"note,omitempty"`
}

// Delta is measured compared with baseline as Compare says (ratio or
// difference); NaN when there is no comparison.
func (r Row) Delta() float64 {
	switch r.Compare {
	case CompareRatio:
		if r.Baseline == 0 {
			return math.NaN()
		}
		return r.Measured / r.Baseline
	case CompareAdded:
		return r.Measured - r.Baseline
	}
	return math.NaN()
}

// Pass reports whether the row meets its target; ok is false when it has
// none.
func (r Row) Pass() (pass, ok bool) {
	if r.Target == nil {
		return false, false
	}
	v := r.Measured
	switch r.Target.On {
	case "ratio", "added":
		v = r.Delta()
	}
	if math.IsNaN(v) {
		return false, true
	}
	switch r.Target.Op {
	case "<":
		return v < r.Target.Limit, true
	case ">=":
		return v >= r.Target.Limit, true
	}
	return false, true
}

// MarshalJSON adds the derived delta and verdict.
func (r Row) MarshalJSON() ([]byte, error) {
	type plain Row
	out := struct {
		plain
		Delta *float64 `json:"delta,omitempty"`
		Pass  *bool    `json:"pass,omitempty"`
	}{plain: plain(r)}
	if d := r.Delta(); !math.IsNaN(d) {
		out.Delta = &d
	}
	if p, ok := r.Pass(); ok {
		out.Pass = &p
	}
	return json.Marshal(out)
}

// ItemError is an item that did not finish.
type ItemError struct {
	Item    int    `json:"item"`
	Error   string `json:"error"`
	Skipped bool   `json:"skipped,omitempty"`
}

// Report is a whole run.
type Report struct {
	Started  time.Time   `json:"started"`
	Duration float64     `json:"duration_s"`
	Quick    bool        `json:"quick"`
	Machine  Machine     `json:"machine"`
	Rows     []Row       `json:"rows"`
	Errors   []ItemError `json:"errors,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
}

// Item is one numbered benchmark of the issue.
type Item struct {
	N    int
	Name string
	Run  func(c *Ctx) []Row
}

// Items are the benchmarks, in order.
var Items = []Item{
	{1, "provisioning throughput (2 GiB LFS file)", benchProvision},
	{2, "cache-hit provisioning latency", benchCacheHit},
	{3, "spawn → ready", benchSpawn},
	{4, "crash → relaunch", benchCrash},
	{5, "API with 1,000 registered workers; daemon RSS", benchAPI},
	{6, "graceful shutdown of 100 slow workers; probe CPU", benchShutdown},
}

// Ctx is what an item gets: its harness environment and the run's options.
type Ctx struct {
	Context context.Context
	Env     *harness.Env
	Quick   bool
	Log     *slog.Logger
	tb      *runTB
}

// Fatalf ends the item with an error.
func (c *Ctx) Fatalf(format string, args ...any) { c.tb.Fatalf(format, args...) }

// Logf reports progress.
func (c *Ctx) Logf(format string, args ...any) { c.Log.Info(fmt.Sprintf(format, args...)) }

// Run runs the chosen items, one harness environment each (so every
// process an item started is gone before the next begins).
func Run(ctx context.Context, opts Options) (*Report, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "rbee-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	rep := &Report{Started: time.Now().UTC(), Quick: opts.Quick, Machine: machine()}
	defer harness.RemoveBuilt()
	for _, it := range Items {
		if len(opts.Only) > 0 && !wanted(opts.Only, it.N) {
			continue
		}
		if ctx.Err() != nil {
			rep.Errors = append(rep.Errors, ItemError{Item: it.N, Error: ctx.Err().Error(), Skipped: true})
			continue
		}
		log.Info("bench: item start", "item", it.N, "name", it.Name)
		start := time.Now()
		rows, ierr := runItem(ctx, it, dir, opts.Quick, log)
		log.Info("bench: item done", "item", it.N, "took", time.Since(start).Round(time.Millisecond))
		rep.Rows = append(rep.Rows, rows...)
		if ierr != nil {
			rep.Errors = append(rep.Errors, *ierr)
		}
	}
	rep.Duration = time.Since(rep.Started).Seconds()
	return rep, nil
}

// wanted reports whether item n was asked for. Item 7 (RSS, probe CPU) is
// measured inside items 5 and 6, so asking for 7 runs them.
func wanted(only []int, n int) bool {
	if slices.Contains(only, n) {
		return true
	}
	return slices.Contains(only, 7) && (n == 5 || n == 6)
}

func runItem(ctx context.Context, it Item, dir string, quick bool, log *slog.Logger) (rows []Row, ierr *ItemError) {
	idir := fmt.Sprintf("%s/item%d", dir, it.N)
	if err := os.MkdirAll(idir, 0o755); err != nil {
		return nil, &ItemError{Item: it.N, Error: err.Error()}
	}
	tb := newRunTB(ctx, fmt.Sprintf("item%d", it.N), idir, log)
	defer func() {
		if r := recover(); r != nil {
			s, ok := r.(stop)
			if !ok {
				panic(r)
			}
			ierr = &ItemError{Item: it.N, Error: s.msg, Skipped: s.skipped}
		}
		tb.runCleanups()
		if ierr == nil && tb.Failed() {
			ierr = &ItemError{Item: it.N, Error: strings.Join(tb.Errors(), "; ")}
		}
	}()
	c := &Ctx{Context: ctx, Env: harness.New(tb), Quick: quick, Log: log.With("item", it.N), tb: tb}
	return it.Run(c), nil
}

// cells renders one row as the table's columns.
func (r Row) cells() []string {
	delta := "—"
	switch d := r.Delta(); {
	case math.IsNaN(d):
	case r.Compare == CompareRatio:
		delta = fmt.Sprintf("%.2f×", d)
	case r.Compare == CompareAdded:
		delta = signed(formatValue(d, r.Unit), d)
	}
	target, verdict := "—", "info"
	if r.Target != nil {
		target = r.Target.String(r.Unit)
		if p, _ := r.Pass(); p {
			verdict = "PASS"
		} else {
			verdict = "MISS"
		}
	}
	base := formatValue(r.Baseline, r.Unit)
	if r.BaselineName == "" && r.Baseline == 0 {
		base = "—"
	} else if r.BaselineName != "" {
		base += " (" + r.BaselineName + ")"
	}
	return []string{fmt.Sprint(r.Item), r.Name, formatValue(r.Measured, r.Unit), base, delta, target, verdict}
}

var header = []string{"#", "what", "measured", "baseline", "ratio/added", "target", "result"}

// WriteTable renders the report as an aligned text table.
func WriteTable(w io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rep.Rows {
		fmt.Fprintln(tw, strings.Join(r.cells(), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range rep.Errors {
		what := "FAILED"
		if e.Skipped {
			what = "skipped"
		}
		fmt.Fprintf(w, "item %d %s: %s\n", e.Item, what, e.Error)
	}
	notes := false
	for _, r := range rep.Rows {
		if r.Note != "" {
			if !notes {
				fmt.Fprintln(w, "\nnotes:")
				notes = true
			}
			fmt.Fprintf(w, "  %d %s: %s\n", r.Item, r.Name, r.Note)
		}
	}
	return nil
}

func signed(s string, v float64) string {
	if v >= 0 {
		return "+" + s
	}
	return s
}

// formatValue prints v in unit with a precision that suits its size.
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	a := math.Abs(v)
	var s string
	switch {
	case a == 0:
		s = "0"
	case a < 0.1:
		s = fmt.Sprintf("%.3f", v)
	case a < 10:
		s = fmt.Sprintf("%.2f", v)
	case a < 100:
		s = fmt.Sprintf("%.1f", v)
	default:
		s = fmt.Sprintf("%.0f", v)
	}
	if unit == "" {
		return s
	}
	return s + " " + unit
}

// WriteMarkdown renders the rows as a Markdown table (for BENCHMARKS.md).
func WriteMarkdown(w io.Writer, rep *Report) error {
	line := func(cells []string) string {
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", "\\|")
		}
		return "| " + strings.Join(cells, " | ") + " |\n"
	}
	var b strings.Builder
	b.WriteString(line(append([]string(nil), header...)))
	b.WriteString("|---|---|---:|---:|---:|---|---|\n")
	for _, r := range rep.Rows {
		b.WriteString(line(r.cells()))
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(&b, "\nItem %d did not finish: %s\n", e.Item, e.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// Failed reports whether an item failed or a target was missed.
func (rep *Report) Failed() bool {
	for _, e := range rep.Errors {
		if !e.Skipped {
			return true
		}
	}
	for _, r := range rep.Rows {
		if p, ok := r.Pass(); ok && !p {
			return true
		}
	}
	return false
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				m.MemTotal = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// percentile returns the p-th percentile (0..100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// latencyRow is the p-th percentile of measured beside that of baseline, in
// milliseconds, compared as time added; target may be nil.
func latencyRow(item int, name string, p float64, measured, baseline []time.Duration, baselineName string, target *Target) Row {
	return Row{Item: item, Name: name, Unit: "ms",
		Measured: ms(percentile(measured, p)), Baseline: ms(percentile(baseline, p)), BaselineName: baselineName,
		Compare: CompareAdded, Target: target}
}
