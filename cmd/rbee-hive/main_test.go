package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/monitor/workertest"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
)

// The test binary doubles as the daemon ("hive" as its first argument) and
// as the reference worker ("refworker"), so the tests run real processes
// without building anything.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "hive":
			os.Exit(run(os.Args[2:], os.Environ(), os.Stdout, os.Stderr))
		case "refworker":
			os.Exit(workertest.Run(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

func TestConfigErrorsExit2(t *testing.T) {
	home := t.TempDir()
	cases := []struct {
		args, env []string
		want      string
	}{
		{nil, []string{"RBEE_HIVE_WORKER__READYNESS=poll"}, "worker.readyness"},
		{[]string{"--bind", "0.0.0.0"}, nil, "without an admin token"},
		{[]string{"--port", "99999"}, nil, "port"},
		{[]string{"--config", filepath.Join(home, "none.yaml")}, nil, "none.yaml"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, append([]string{"HOME=" + home}, tc.env...), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q %q: exit %d, stderr %q; want 2 naming %q", tc.args, tc.env, code, stderr.String(), tc.want)
		}
	}
	var stdout bytes.Buffer
	if code := run([]string{"--version"}, []string{"HOME=" + home}, &stdout, io.Discard); code != 0 || !strings.Contains(stdout.String(), version) {
		t.Errorf("--version: %d %q", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"--help"}, nil, &stdout, io.Discard); code != 0 || !strings.Contains(stdout.String(), "--port") {
		t.Errorf("--help: %d %q", code, stdout.String())
	}
}

// hive is one daemon process.
type hive struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer // stderr after the listening line
	done chan struct{}
	err  error
}

const token = "test-admin-token"

// startHive runs the daemon with a state dir, a cpu model in a local dir,
// and the test binary as worker; extra env overrides.
func startHive(t *testing.T, stateDir, modelDir string, extra ...string) *hive {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	command, _ := json.Marshal([]string{self, "refworker", "--worker-id", "{worker_id}", "--model", "{model_path}",
		"--model-ref", "{model_ref}", "--backend", "{backend}", "--device", "{device}", "--port", "{port}",
		"--callback-url", "{callback_url}"})
	env := append(os.Environ(),
		"HOME="+t.TempDir(),
		"RBEE_HIVE_PORT=0",
		"RBEE_HIVE_STATE_DIR="+stateDir,
		"RBEE_HIVE_TOKEN="+token,
		"RBEE_HIVE_LOG__FORMAT=json",
		"RBEE_HIVE_WORKER__COMMAND="+string(command),
		"RBEE_HIVE_PROVISIONER__LOCAL_DIRS="+modelDir,
		"RBEE_HIVE_PROVISIONER__CACHE_DIR="+filepath.Join(stateDir, "cache"),
		"RBEE_HIVE_RESOURCES__NVML_MOCK=dgxh100",
	)
	env = append(env, extra...)
	cmd := exec.Command(self, "hive")
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &hive{t: t, cmd: cmd, logs: &bytes.Buffer{}, done: make(chan struct{})}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "rbee-hive listening" {
				listening <- line.Addr
			}
			h.logs.Write(sc.Bytes()) // read only after done
			h.logs.WriteByte('\n')
		}
		h.err = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			_ = cmd.Process.Kill()
			<-h.done
		}
	})
	select {
	case addr := <-listening:
		h.url = "http://" + addr
	case <-h.done:
		t.Fatalf("hive exited before listening: %v\n%s", h.err, h.logs)
	case <-time.After(60 * time.Second):
		t.Fatal("hive did not start listening")
	}
	return h
}

// wait waits for the daemon to exit and returns its exit code.
func (h *hive) wait() int {
	h.t.Helper()
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
		h.t.Fatal("hive did not exit")
	}
	var ee *exec.ExitError
	if errors.As(h.err, &ee) {
		return ee.ExitCode()
	}
	if h.err != nil {
		h.t.Fatal(h.err)
	}
	return 0
}

func (h *hive) do(method, path string, body any) (int, map[string]any) {
	h.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.url+path, r)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func modelFile(t *testing.T) (dir, ref string) {
	dir = t.TempDir()
	p := filepath.Join(dir, "tiny.gguf")
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, "file:" + p
}

func (h *hive) spawn(ref string) (id string, pid int) {
	h.t.Helper()
	code, w := h.do(http.MethodPost, "/v1/workers/spawn", map[string]any{"model_ref": ref, "backend": "cpu", "wait": true})
	if code != http.StatusOK || w["state"] != "idle" {
		h.t.Fatalf("spawn: %d %v", code, w)
	}
	return w["worker_id"].(string), int(w["pid"].(float64))
}

// alive reports whether pid runs; a zombie (exited, its new parent not
// having reaped it yet) does not count.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestSIGTERMDrainsAndExits0(t *testing.T) {
	modelDir, ref := modelFile(t)
	// Each worker takes 1s to go after its shutdown request, so the drain
	// can be observed from outside; stopped one after another, 4 of them
	// would overrun shutdown.timeout, and the hive would exit 1.
	h := startHive(t, t.TempDir(), modelDir, "RBEE_REF_SHUTDOWN_DELAY=1s", "RBEE_HIVE_SHUTDOWN__TIMEOUT=3s")
	if code, body := h.do(http.MethodGet, "/v1/health", nil); code != 200 || body["status"] != "alive" {
		t.Fatalf("health: %d %v", code, body)
	}
	var pids []int
	for range 4 {
		_, pid := h.spawn(ref)
		pids = append(pids, pid)
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// While the workers stop, the API answers: health 503, mutations 503.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := h.do(http.MethodGet, "/v1/health", nil)
		if code == http.StatusServiceUnavailable {
			if body["status"] != "shutting_down" {
				t.Errorf("health while draining: %v", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("health never turned 503")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body := h.do(http.MethodPost, "/v1/workers/spawn", map[string]any{"model_ref": ref, "backend": "cpu"}); code != http.StatusServiceUnavailable ||
		fmt.Sprint(body["error"].(map[string]any)["code"]) != "SHUTTING_DOWN" {
		t.Errorf("spawn while draining: %d %v", code, body)
	}
	if code := h.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, h.logs)
	}
	if n := strings.Count(h.logs.String(), `"outcome":"graceful"`); n != len(pids) {
		t.Errorf("%d graceful stops, want %d:\n%s", n, len(pids), h.logs)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("worker %d outlived the hive", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestLeaveWorkersForTheNextHive(t *testing.T) {
	modelDir, ref := modelFile(t)
	state := t.TempDir()
	h := startHive(t, state, modelDir, "RBEE_HIVE_SHUTDOWN__LEAVE_WORKERS=true")
	id, pid := h.spawn(ref)
	if code, body := h.do(http.MethodPost, "/v1/admin/shutdown", nil); code != http.StatusAccepted || body["status"] != "shutting_down" {
		t.Fatalf("admin shutdown: %d %v", code, body)
	}
	if code := h.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, h.logs)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if !alive(pid) {
		t.Fatal("leave_workers: the worker was stopped")
	}

	// The next hive re-adopts it, then stops it on its own shutdown.
	h2 := startHive(t, state, modelDir)
	code, body := h2.do(http.MethodGet, "/v1/workers/list", nil)
	ws, _ := body["workers"].([]any)
	if code != 200 || len(ws) != 1 || ws[0].(map[string]any)["worker_id"] != id {
		t.Fatalf("re-adopted: %d %v", code, body)
	}
	if err := h2.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := h2.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, h2.logs)
	}
	if alive(pid) {
		t.Error("the re-adopted worker outlived the second hive")
	}
}

func TestMetricsAndAudit(t *testing.T) {
	modelDir, ref := modelFile(t)
	state := t.TempDir()
	h := startHive(t, state, modelDir)
	h.spawn(ref)
	resp, err := http.Get(h.url + "/metrics") // needs the token
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("metrics without token: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, h.url+"/v1/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"rbee_hive_workers_total 1\n",
		`rbee_hive_workers_by_state{state="idle"} 1` + "\n",
		`rbee_hive_vram_total_bytes{device="cuda:7"} 8.589934592e+10` + "\n",
		`rbee_hive_requests_total{code="200",method="POST",route="/v1/workers/spawn"} 1` + "\n",
		"rbee_hive_worker_ready_seconds_count 1\n",
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := h.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, h.logs)
	}
	fi, err := os.Stat(filepath.Join(state, "audit.log"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Errorf("audit log: %v %v", fi, err)
	}
}

// TestEventsSeeTheShutdown: an open event stream gets hive_shutting_down
// and then ends, so it does not hold the HTTP server open; queen gets the
// same events pushed.
func TestEventsSeeTheShutdown(t *testing.T) {
	type push struct {
		auth  string
		types []string
	}
	pushes := make(chan push, 100)
	queen := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Events []struct{ Type string } `json:"events"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		p := push{auth: r.Header.Get("Authorization")}
		for _, e := range body.Events {
			p.types = append(p.types, e.Type)
		}
		pushes <- p
	}))
	defer queen.Close()

	modelDir, ref := modelFile(t)
	h := startHive(t, t.TempDir(), modelDir, "RBEE_HIVE_QUEEN__URL="+queen.URL+"/v1/hives/events", "RBEE_HIVE_QUEEN__TOKEN=qt")
	req, _ := http.NewRequest(http.MethodGet, h.url+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	h.spawn(ref)
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stream, err := io.ReadAll(resp.Body) // ends when the hive closes it
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("stream ended with %v", err)
	}
	if code := h.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, h.logs)
	}
	for _, want := range []string{"event: worker_registered\n", "event: hive_shutting_down\n", "event: worker_removed\n"} {
		if !strings.Contains(string(stream), want) {
			t.Errorf("stream lacks %q:\n%s", want, stream)
		}
	}
	if strings.Contains(h.logs.String(), "closing HTTP connections") {
		t.Errorf("an event stream held the HTTP server open:\n%s", h.logs)
	}
	var got []string
	for len(pushes) > 0 {
		p := <-pushes
		if p.auth != "Bearer qt" {
			t.Errorf("push Authorization %q", p.auth)
		}
		got = append(got, p.types...)
	}
	if len(got) == 0 || got[0] != "reset" || !slices.Contains(got, "worker_registered") || !slices.Contains(got, "hive_shutting_down") {
		t.Errorf("queen got %q", got)
	}
}

func TestPortInUseExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	var stderr bytes.Buffer
	env := []string{"HOME=" + t.TempDir(), "RBEE_HIVE_STATE_DIR=" + t.TempDir(), "RBEE_HIVE_PROVISIONER__CACHE_DIR=" + t.TempDir()}
	if code := run([]string{"--port", port}, env, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("exit %d, stderr %s", code, stderr.String())
	}
}

// TestSecondHiveOnOneStateDirRefused: two hives on one state_dir would
// both supervise the same workers; the second refuses to start, naming the
// first, and starts once the first is gone.
func TestSecondHiveOnOneStateDirRefused(t *testing.T) {
	stateDir := t.TempDir()
	modelDir, _ := modelFile(t)
	first := startHive(t, stateDir, modelDir)
	env := []string{"HOME=" + t.TempDir(), "RBEE_HIVE_PORT=0", "RBEE_HIVE_STATE_DIR=" + stateDir,
		"RBEE_HIVE_PROVISIONER__CACHE_DIR=" + t.TempDir()}
	var stderr bytes.Buffer
	code := run(nil, env, io.Discard, &stderr)
	want := fmt.Sprintf("in use by another rbee-hive (pid %d)", first.cmd.Process.Pid)
	if code != 1 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("second hive: exit %d, stderr %s; want exit 1 and %q", code, stderr.String(), want)
	}
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(); code != 0 {
		t.Fatalf("first hive exited %d", code)
	}
	startHive(t, stateDir, modelDir) // the lock went with the first hive
}

// TestShutdownCancelsProvisionsKeepingPartials: a download in flight is
// cancelled by the drain, the hive still exits 0, and what was downloaded
// stays on disk for a resume.
func TestShutdownCancelsProvisionsKeepingPartials(t *testing.T) {
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	if _, err := hub.AddRepo("org/big", &hubtest.File{Path: "model.gguf", Content: hubtest.Synthetic(3, 4<<20), LFS: true,
		Faults: hubtest.Faults{CutAfter: 1 << 20, Stall: 10 * time.Minute}}); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	h := startHive(t, state, t.TempDir(), "RBEE_HIVE_PROVISIONER__HF_ENDPOINT="+hub.URL())
	code, body := h.do(http.MethodPost, "/v1/models/provision", map[string]any{"model_ref": "hf:org/big/model.gguf"})
	if code != http.StatusAccepted {
		t.Fatalf("provision: %d %v", code, body)
	}
	id := body["provision_id"].(string)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, st := h.do(http.MethodGet, "/v1/models/provision/"+id, nil)
		if done, _ := st["bytes_done"].(float64); done >= 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("download never got going: %v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := h.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, h.logs)
	}
	var partial int64
	_ = filepath.WalkDir(filepath.Join(state, "cache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".incomplete") {
			if fi, err := d.Info(); err == nil {
				partial += fi.Size()
			}
		}
		return nil
	})
	if partial < 1<<20 {
		t.Errorf("partial download kept: %d bytes, want >= %d", partial, 1<<20)
	}
}
