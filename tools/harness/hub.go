package harness

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
)

// StartHub runs a Hugging Face hub in this process on 127.0.0.1 (so a test
// can add repos and inject faults while the hive downloads); the cleanup
// closes it.
func (e *Env) StartHub() *hubtest.Server {
	e.TB.Helper()
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		e.TB.Fatalf("harness: hub: %v", err)
	}
	e.TB.Cleanup(func() { hub.Close() })
	return hub
}

// HubServer is the tools/cmd/hubserver program, run as a user would.
type HubServer struct {
	URL     string // the HF_ENDPOINT to give the hive
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// StartHubServer runs the hubserver binary with args (e.g. "--repos", dir)
// and returns once it printed its URL. It skips the test when the binary
// was not built. The Env's cleanup kills it.
func (e *Env) StartHubServer(args ...string) *HubServer {
	e.TB.Helper()
	if e.Bins.HubServer == "" {
		e.TB.Skip("tools/cmd/hubserver is not built")
	}
	h := &HubServer{LogPath: e.Path(fmt.Sprintf("hubserver-%d.log", time.Now().UnixNano())), done: make(chan struct{})}
	logf, err := os.Create(h.LogPath)
	if err != nil {
		e.TB.Fatal(err)
	}
	defer logf.Close()
	h.cmd = exec.Command(e.Bins.HubServer, args...)
	h.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.Path("home"), e.Marker()}
	h.cmd.Stderr = logf
	h.cmd.SysProcAttr = ownGroup()
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		e.TB.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		e.TB.Fatalf("harness: start hubserver: %v", err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() { // keep draining so the server never blocks on stdout
		}
	}()
	e.mu.Lock()
	e.hubs = append(e.hubs, h.cmd.Process.Pid)
	e.mu.Unlock()
	go func() {
		_ = h.cmd.Wait()
		close(h.done)
	}()
	e.TB.Cleanup(func() {
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	})
	select {
	case line, ok := <-lines:
		if !ok || !strings.HasPrefix(line, "http://127.0.0.1:") {
			b, _ := os.ReadFile(h.LogPath)
			e.TB.Fatalf("harness: hubserver printed %q, want its URL\n%s", line, b)
		}
		h.URL = line
	case <-time.After(60 * time.Second):
		e.TB.Fatal("harness: hubserver printed no URL in 60s")
	}
	return h
}

// Client is the typed API client for this daemon, with its admin token and
// no overall timeout (event streams are bounded by their context).
func (d *Daemon) Client() *client.Client {
	return client.New(d.URL, d.Token, client.WithHTTPClient(&http.Client{}))
}
