package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// startDaemon runs one rbee-hive for an item: the harness's config with
// info logging (the harness logs at debug for the tests, which costs time
// on every request), worker ports [lo, hi] when hi > 0, and cfg merged
// over it.
func startDaemon(c *Ctx, lo, hi int, cfg map[string]any, env ...string) *harness.Daemon {
	tree := map[string]any{"log": map[string]any{"level": "info"}}
	if hi > 0 {
		tree["worker"] = map[string]any{"port_range": []any{lo, hi}}
	}
	merge(tree, cfg)
	return c.Env.StartDaemon(harness.DaemonOptions{Config: tree, Env: env})
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// newHTTP is a keep-alive client for measurements.
func newHTTP() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
	}}
}

// call sends one request (body nil for none) with the token and reads the
// whole answer; it returns the status and the time to the last byte.
func call(ctx context.Context, hc *http.Client, method, url, token string, body []byte) (int, time.Duration, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return resp.StatusCode, d, nil, err
	}
	return resp.StatusCode, d, b, nil
}

// request is one GET a load sends: url with the token (if any), and
// If-None-Match when etag is set.
type request struct{ url, token, etag string }

// ok reports whether status is a success for r: 200, or 304 for a
// conditional request.
func (r request) ok(status int) bool {
	return status == http.StatusOK || (r.etag != "" && status == http.StatusNotModified)
}

// build makes r's *http.Request.
func (r request) build(ctx context.Context) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, err
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.etag != "" {
		req.Header.Set("If-None-Match", r.etag)
	}
	return req, nil
}

// callDiscard is call for load generation: the body is read into a reused
// buffer and dropped, so the client's own copying weighs as little as it can
// on the cores it shares with the server.
func callDiscard(ctx context.Context, hc *http.Client, r request, buf []byte) (int, time.Duration, error) {
	req, err := r.build(ctx)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, err = io.CopyBuffer(io.Discard, onlyReader{resp.Body}, buf)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start), err
}

// onlyReader hides WriterTo, so CopyBuffer uses the buffer it was given.
type onlyReader struct{ io.Reader }

// mustCall is call that ends the item unless the status is want.
func mustCall(c *Ctx, hc *http.Client, method, url, token string, body []byte, want int) (time.Duration, []byte) {
	st, d, b, err := call(c.Context, hc, method, url, token, body)
	if err != nil {
		c.Fatalf("%s %s: %v", method, url, err)
	}
	if st != want {
		c.Fatalf("%s %s: status %d, want %d: %s", method, url, st, want, b)
	}
	return d, b
}

// rssMiB is the resident set of pid (VmRSS), in MiB.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				return kb / 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTicks is USER_HZ, which /proc/<pid>/stat counts in; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the user + system time pid used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(0) ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime(11) stime(12).
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

// median of a small sample.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// waitFor polls cond every interval until it holds or timeout passes.
func waitFor(c *Ctx, what string, timeout, interval time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.Fatalf("%s: not reached after %s", what, timeout)
		}
		select {
		case <-c.Context.Done():
			c.Fatalf("%s: %v", what, c.Context.Err())
		case <-time.After(interval):
		}
	}
}
