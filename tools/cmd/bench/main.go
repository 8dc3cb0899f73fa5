// Command bench measures the whole rbee-hive daemon (see package
// tools/bench and BENCHMARKS.md): run it from the repository root with
//
//	go run ./tools/cmd/bench [-quick] [-only 1,3,5] [-out bench-results/bench.json] [-md table.md]
//
// It prints a table and writes the same figures as JSON. It exits 1 when an
// item failed or a target was missed (-strict), 2 on bad flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/rbee-hive/rbee-hive/tools/bench"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	out := fs.String("out", "bench-results/bench.json", "JSON report path (\"\" for none)")
	only := fs.String("only", "", "comma-separated items to run (1-7); empty runs all")
	md := fs.String("md", "", "also write the table as Markdown to this path")
	quick := fs.Bool("quick", false, "small sizes and few iterations: a smoke run")
	strict := fs.Bool("strict", false, "exit 1 when a target is missed, not only when an item fails")
	verbose := fs.Bool("v", false, "debug progress on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	items, err := parseOnly(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, bench.Options{Only: items, Quick: *quick, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if err := bench.WriteTable(os.Stdout, rep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if *out != "" {
		if err := writeJSON(*out, rep); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "bench: wrote %s\n", *out)
	}
	if *md != "" {
		f, err := os.Create(*md)
		if err == nil {
			err = bench.WriteMarkdown(f, rep)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	failed := false
	for _, e := range rep.Errors {
		failed = failed || !e.Skipped
	}
	if failed || (*strict && rep.Failed()) {
		return 1
	}
	return 0
}

func parseOnly(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 7 {
			return nil, fmt.Errorf("-only: %q is not an item 1-7", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func writeJSON(path string, rep *bench.Report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.WriteJSON(f, rep); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
