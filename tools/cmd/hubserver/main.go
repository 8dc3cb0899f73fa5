// Command hubserver serves a local Hugging Face hub over 127.0.0.1 for
// offline demos and benchmarks: repos from a directory (each <org>/<name>
// sub-directory is one repo) or synthetic files, over the protocol
// huggingface_hub and rbee-hive speak, with optional fault injection.
//
//	hubserver --port 8900 --synthetic demo/tiny/model.gguf=64MiB
//	HF_ENDPOINT=http://127.0.0.1:8900 rbee-hive ...
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
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hubserver:", err)
		os.Exit(1)
	}
}

func run() error {
	var synthetic listFlag
	port := flag.Int("port", 0, "API port on 127.0.0.1 (0: any free port)")
	cdnPort := flag.Int("cdn-port", 0, "CDN (LFS content) port on 127.0.0.1 (0: any free port)")
	reposDir := flag.String("repos", "", "directory of repos: <dir>/<org>/<name>/... ")
	lfsMin := flag.String("lfs-min", "10MiB", "files at least this big are served as LFS files (302 to the CDN)")
	token := flag.String("token", "", "token that gated repos require")
	gated := flag.String("gated", "", "comma-separated repos that need --token")
	flag.Var(&synthetic, "synthetic", "org/repo/path=size: a generated LFS file (repeatable), e.g. demo/tiny/model.gguf=1GiB")
	failFirst := flag.Int("fail-first", 0, "answer the first N content requests of each file with --fail-status")
	failStatus := flag.Int("fail-status", 503, "status for --fail-first (429 or 503)")
	cutAfter := flag.String("cut-after", "", "cut the first content response of each file after this many bytes")
	corruptAt := flag.Int64("corrupt-at", -1, "flip the byte at this offset in the first content response of each file")
	stall := flag.Duration("stall", 0, "stall content responses this long before the body")
	ignoreRange := flag.Bool("ignore-range", false, "answer Range requests with the whole file")
	flag.Parse()

	lfsThreshold, err := parseSize(*lfsMin)
	if err != nil {
		return fmt.Errorf("--lfs-min: %w", err)
	}
	hub, err := hubtest.New(hubtest.Options{
		Addr:    fmt.Sprintf("127.0.0.1:%d", *port),
		CDNAddr: fmt.Sprintf("127.0.0.1:%d", *cdnPort),
		Token:   *token,
	})
	if err != nil {
		return err
	}
	defer hub.Close()

	if *reposDir != "" {
		orgs, err := os.ReadDir(*reposDir)
		if err != nil {
			return err
		}
		for _, org := range orgs {
			if !org.IsDir() {
				continue
			}
			names, err := os.ReadDir(filepath.Join(*reposDir, org.Name()))
			if err != nil {
				return err
			}
			for _, n := range names {
				if !n.IsDir() {
					continue
				}
				name := org.Name() + "/" + n.Name()
				if _, err := hub.AddDir(name, filepath.Join(*reposDir, org.Name(), n.Name()), lfsThreshold); err != nil {
					return err
				}
				slog.Info("serving repo", "repo", name)
			}
		}
	}
	files := map[string][]*hubtest.File{}
	for i, s := range synthetic {
		spec, sizeText, ok := strings.Cut(s, "=")
		parts := strings.SplitN(spec, "/", 3)
		if !ok || len(parts) != 3 {
			return fmt.Errorf("--synthetic %q: want org/repo/path=size", s)
		}
		size, err := parseSize(sizeText)
		if err != nil {
			return fmt.Errorf("--synthetic %q: %w", s, err)
		}
		repo := parts[0] + "/" + parts[1]
		files[repo] = append(files[repo], &hubtest.File{Path: parts[2], Content: hubtest.Synthetic(uint64(i+1), size), LFS: true})
	}
	for repo, fs := range files {
		start := time.Now()
		if _, err := hub.AddRepo(repo, fs...); err != nil {
			return err
		}
		slog.Info("serving synthetic repo", "repo", repo, "files", len(fs), "hashed_in", time.Since(start).Round(time.Millisecond))
	}
	for _, g := range strings.Split(*gated, ",") {
		if g != "" {
			hub.SetGated(g, true)
		}
	}
	faults := hubtest.Faults{FailFirst: *failFirst, FailStatus: *failStatus, Stall: *stall, IgnoreRange: *ignoreRange}
	if *cutAfter != "" {
		if faults.CutAfter, err = parseSize(*cutAfter); err != nil {
			return fmt.Errorf("--cut-after: %w", err)
		}
		faults.CutTimes = 1
	}
	if *corruptAt >= 0 {
		faults.Corrupt, faults.CorruptAt, faults.CorruptTimes = true, *corruptAt, 1
	}
	hub.SetFaults("", "", faults)

	fmt.Println(hub.URL())
	slog.Info("hub listening", "url", hub.URL(), "cdn", hub.CDNURL(), "hint", "export HF_ENDPOINT="+hub.URL())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	st := hub.Stats()
	slog.Info("hub stopping", "requests", st.Requests, "bytes_sent", st.BytesSent)
	return nil
}

// parseSize reads "123", "64KiB", "10MiB", "1GiB" (also KB/MB/GB as powers of 1000).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
