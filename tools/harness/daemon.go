package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Where the harness puts the port and the token.
const (
	ViaFlag    = "flag" // --port N
	ViaFile    = "file" // the config file
	ViaEnv     = "env"  // RBEE_HIVE_PORT, RBEE_HIVE_TOKEN
	ViaNowhere = "none" // the test supplies it itself (Config, Env or Args)
)

// DaemonOptions say how to run one rbee-hive.
type DaemonOptions struct {
	// StateDir is the hive's state_dir; "" makes a fresh one. Pass another
	// daemon's StateDir to restart on the same state.
	StateDir string
	// Port the hive listens on; 0 picks a free one. PortVia says where it
	// is set: ViaFlag (default), ViaFile, ViaEnv or ViaNowhere.
	Port    int
	PortVia string
	// Token is the admin token; "" makes a random one unless NoToken.
	// TokenVia: ViaEnv (RBEE_HIVE_TOKEN, default), ViaFile (auth.token) or
	// ViaNowhere.
	Token    string
	TokenVia string
	NoToken  bool
	// WorkerCommand replaces the reference worker's command line.
	WorkerCommand []string
	// Config is merged over the harness's config tree (nil values delete
	// keys); the result is written as the YAML file given with --config.
	Config map[string]any
	// Env is added to the hive's environment (and so to its workers').
	Env []string
	// Args are added to the command line.
	Args []string
	// NoConfigFile runs without --config.
	NoConfigFile bool
	// NoWait returns as soon as the process started, without waiting for
	// GET /v1/health (for tests of startup failures).
	NoWait bool
}

// Daemon is a running (or exited) rbee-hive process.
type Daemon struct {
	Env        *Env
	URL        string // http://127.0.0.1:PORT
	Port       int
	Token      string
	StateDir   string
	ConfigPath string // "" with NoConfigFile
	LogPath    string // stderr (the slog log)
	StdoutPath string
	HTTP       *http.Client

	n     int
	cmd   *exec.Cmd
	done  chan struct{}
	state *os.ProcessState
}

// DefaultWorkerCommand is DESIGN.md's default worker command with the
// reference worker as the program.
func DefaultWorkerCommand(refworker string) []string {
	return []string{refworker, "--worker-id", "{worker_id}", "--model", "{model_path}",
		"--model-ref", "{model_ref}", "--backend", "{backend}", "--device", "{device}",
		"--port", "{port}", "--callback-url", "{callback_url}"}
}

// StartDaemon writes the config, starts the hive in a process group of its
// own and, unless NoWait, waits until GET /v1/health answers 200. A start
// that fails because the picked port was taken meanwhile is retried.
func (e *Env) StartDaemon(opts DaemonOptions) *Daemon {
	e.TB.Helper()
	for attempt := 0; ; attempt++ {
		d, err := e.startDaemon(opts)
		if err == nil {
			return d
		}
		if opts.Port == 0 && attempt < 3 && strings.Contains(d.Log(), "address already in use") {
			continue
		}
		e.TB.Fatalf("harness: start daemon: %v\n--- log:\n%s", err, tail(d.Log(), 60))
	}
}

func (e *Env) startDaemon(opts DaemonOptions) (*Daemon, error) {
	e.mu.Lock()
	e.n++
	n := e.n
	e.mu.Unlock()

	d := &Daemon{Env: e, n: n, done: make(chan struct{}), StateDir: opts.StateDir, Token: opts.Token,
		LogPath: e.Path(fmt.Sprintf("daemon-%d.log", n)), StdoutPath: e.Path(fmt.Sprintf("daemon-%d.stdout", n)), HTTP: &http.Client{Timeout: 30 * time.Second}}
	if d.StateDir == "" {
		d.StateDir = e.Path(fmt.Sprintf("state-%d", n))
	}
	if d.Token == "" && !opts.NoToken {
		d.Token = "e2e-" + randomHex(16)
	}
	if opts.NoToken {
		d.Token = ""
	}
	d.Port = opts.Port
	if d.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return d, err
		}
		d.Port = p
	}
	d.URL = "http://127.0.0.1:" + strconv.Itoa(d.Port)

	home := e.Path("home")
	for _, dir := range []string{home, e.Path("models"), e.Path("hf-cache")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return d, err
		}
	}
	command := opts.WorkerCommand
	if command == nil {
		command = DefaultWorkerCommand(e.Bins.RefWorker)
	}
	ports := WorkerPortRange()
	tree := map[string]any{
		"bind":      "127.0.0.1",
		"state_dir": d.StateDir,
		"worker": map[string]any{
			"command":       command,
			"port_range":    []any{ports[0], ports[1]},
			"ready_timeout": "30s",
			"grace":         "2s",
		},
		"health":      map[string]any{"interval": "500ms", "timeout": "1s", "failure_threshold": 3},
		"restart":     map[string]any{"backoff": map[string]any{"initial": "50ms", "max": "1s"}},
		"shutdown":    map[string]any{"timeout": "20s"},
		"provisioner": map[string]any{"cache_dir": e.Path("hf-cache"), "local_dirs": []string{e.Path("models")}},
		"log":         map[string]any{"level": "debug"},
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + e.Dir, e.Marker()}
	args := []string{}
	switch opts.PortVia {
	case "", ViaFlag:
		args = append(args, "--port", strconv.Itoa(d.Port))
	case ViaFile:
		tree["port"] = d.Port
	case ViaEnv:
		env = append(env, "RBEE_HIVE_PORT="+strconv.Itoa(d.Port))
	}
	if d.Token != "" {
		switch opts.TokenVia {
		case "", ViaEnv:
			env = append(env, "RBEE_HIVE_TOKEN="+d.Token)
		case ViaFile:
			tree["auth"] = map[string]any{"token": d.Token}
		}
	}
	mergeTree(tree, opts.Config)
	if !opts.NoConfigFile {
		d.ConfigPath = e.Path(fmt.Sprintf("hive-%d.yaml", n))
		if err := os.WriteFile(d.ConfigPath, []byte(writeYAML(tree)), 0o600); err != nil {
			return d, err
		}
		args = append([]string{"--config", d.ConfigPath}, args...)
	}
	args = append(args, opts.Args...)
	env = append(env, opts.Env...)

	logf, err := os.Create(d.LogPath)
	if err != nil {
		return d, err
	}
	defer logf.Close() // the child has its own copies
	outf, err := os.Create(d.StdoutPath)
	if err != nil {
		return d, err
	}
	defer outf.Close()
	d.cmd = exec.Command(e.Bins.Hive, args...)
	d.cmd.Env = env
	d.cmd.Dir = e.Dir
	d.cmd.Stdout, d.cmd.Stderr = outf, logf
	d.cmd.SysProcAttr = ownGroup()
	if err := d.cmd.Start(); err != nil {
		return d, fmt.Errorf("start %s: %w", e.Bins.Hive, err)
	}
	e.mu.Lock()
	e.daemons = append(e.daemons, d)
	e.mu.Unlock()
	go func() {
		_ = d.cmd.Wait()
		d.state = d.cmd.ProcessState
		close(d.done)
	}()
	if opts.NoWait {
		return d, nil
	}
	return d, d.waitHealthy(60 * time.Second)
}

// waitHealthy polls GET /v1/health until 200, the process exits, or timeout.
func (d *Daemon) waitHealthy(timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return fmt.Errorf("rbee-hive exited before it was healthy: %s", d.state)
		default:
		}
		resp, err := hc.Get(d.URL + "/v1/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("rbee-hive not healthy at %s after %s", d.URL, timeout)
}

// PID is the daemon's process id.
func (d *Daemon) PID() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Done is closed once the daemon exited and was reaped.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Wait waits up to timeout for the daemon to exit and returns its state;
// the error says it did not exit in time.
func (d *Daemon) Wait(timeout time.Duration) (*os.ProcessState, error) {
	select {
	case <-d.done:
		return d.state, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("rbee-hive (pid %d) still running after %s", d.PID(), timeout)
	}
}

// Signal sends sig to the daemon process (not its group: the hive stops its
// workers itself).
func (d *Daemon) Signal(sig syscall.Signal) error {
	return syscall.Kill(d.PID(), sig)
}

// Stop sends SIGTERM and waits for the exit; it fails the test if the hive
// does not exit within timeout.
func (d *Daemon) Stop(timeout time.Duration) *os.ProcessState {
	d.Env.TB.Helper()
	if err := d.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		d.Env.TB.Fatalf("harness: SIGTERM: %v", err)
	}
	st, err := d.Wait(timeout)
	if err != nil {
		d.Env.TB.Fatalf("harness: %v", err)
	}
	return st
}

// Kill9 sends SIGKILL to the daemon alone, as `kill -9 <pid>` does, and
// waits until it is reaped. Its workers (own process groups) live on.
func (d *Daemon) Kill9() {
	d.Env.TB.Helper()
	_ = d.Signal(syscall.SIGKILL)
	if _, err := d.Wait(10 * time.Second); err != nil {
		d.Env.TB.Fatalf("harness: %v", err)
	}
}

// kill ends the daemon's process group for the cleanup.
func (d *Daemon) kill() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = syscall.Kill(-d.PID(), syscall.SIGKILL)
	_ = syscall.Kill(d.PID(), syscall.SIGKILL)
}

// Log returns what the daemon wrote to stderr (its log) so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// Stdout returns what the daemon wrote to stdout so far.
func (d *Daemon) Stdout() string {
	b, _ := os.ReadFile(d.StdoutPath)
	return string(b)
}

// Response is one HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test when it is not JSON.
func (r Response) JSON(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %d body %q: %v", r.Status, r.Body, err)
	}
}

// Request sends one request with the admin token (when the daemon has one)
// and a JSON body (nil for none), failing the test on a transport error.
func (d *Daemon) Request(method, path string, body any) Response {
	d.Env.TB.Helper()
	auth := ""
	if d.Token != "" {
		auth = "Bearer " + d.Token
	}
	return d.RequestAuth(method, path, auth, body)
}

// RequestAuth is Request with an explicit Authorization header ("" for
// none).
func (d *Daemon) RequestAuth(method, path, authorization string, body any) Response {
	d.Env.TB.Helper()
	h := map[string]string{}
	if authorization != "" {
		h["Authorization"] = authorization
	}
	return d.do(method, path, h, body)
}

// RequestHeaders sends a request without a body, with the admin token and
// the given headers.
func (d *Daemon) RequestHeaders(method, path string, headers map[string]string) Response {
	d.Env.TB.Helper()
	h := map[string]string{}
	if d.Token != "" {
		h["Authorization"] = "Bearer " + d.Token
	}
	for k, v := range headers {
		h[k] = v
	}
	return d.do(method, path, h, nil)
}

func (d *Daemon) do(method, path string, headers map[string]string, body any) Response {
	d.Env.TB.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			d.Env.TB.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, d.URL+path, rd)
	if err != nil {
		d.Env.TB.Fatalf("request %s %s: %v", method, path, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := d.HTTP.Do(req)
	if err != nil {
		d.Env.TB.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.Env.TB.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// WorkerLogDir is where the hive keeps worker logs under its state_dir.
func (d *Daemon) WorkerLogDir() string { return filepath.Join(d.StateDir, "logs") }

// ownGroup puts a started program in a process group of its own (so the
// cleanup can kill what it started) and kills it if the test process dies
// without running its cleanups (a test timeout panics past them). Go never
// retires the thread that forked unless a goroutine locked to it exits,
// which test code does not do.
func ownGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
