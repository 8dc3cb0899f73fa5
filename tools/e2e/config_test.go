package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

func TestHealthIsPublic(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	r := d.RequestAuth("GET", "/v1/health", "", nil)
	if r.Status != 200 {
		t.Fatalf("GET /v1/health without a token: %d %s", r.Status, r.Body)
	}
	var m map[string]any
	r.JSON(t, &m)
	if m["status"] != "alive" || m["api_version"] != "v1" || m["version"] == "" || m["version"] == nil {
		t.Fatalf("health body %s", r.Body)
	}
}

// TestConfigPrecedence starts the hive with a port in the file, another in
// the environment and a third as a flag, then drops them one by one: the
// hive listens where the strongest source says.
func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	ports := make([]int, 3)
	for i := range ports {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	filePort, envPort, flagPort := ports[0], ports[1], ports[2]
	cases := []struct {
		name       string
		env, args  []string
		listenPort int
	}{
		{"flag over env over file", []string{"RBEE_HIVE_PORT=" + strconv.Itoa(envPort)}, []string{"--port", strconv.Itoa(flagPort)}, flagPort},
		{"env over file", []string{"RBEE_HIVE_PORT=" + strconv.Itoa(envPort)}, nil, envPort},
		{"file", nil, nil, filePort},
	}
	for _, c := range cases {
		d := e.StartDaemon(harness.DaemonOptions{
			Port: c.listenPort, PortVia: harness.ViaNowhere,
			Config: map[string]any{"port": filePort}, Env: c.env, Args: c.args,
		})
		if r := d.RequestAuth("GET", "/v1/health", "", nil); r.Status != 200 {
			t.Fatalf("%s: health on %d: %d", c.name, c.listenPort, r.Status)
		}
		if st := d.Stop(30 * time.Second); !st.Success() {
			t.Fatalf("%s: SIGTERM exit: %s\n%s", c.name, st, d.Log())
		}
	}
}

// TestConfigRejected runs the hive with configurations it must refuse: it
// exits non-zero at once and names the offending key.
func TestConfigRejected(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	cases := []struct {
		name string
		opts harness.DaemonOptions
		want []string // in the output
	}{
		{"unknown key in the file", harness.DaemonOptions{Config: map[string]any{"worker": map[string]any{"comand": []string{"x"}}}}, []string{"worker.comand", "unknown key"}},
		{"unknown key in the environment", harness.DaemonOptions{Env: []string{"RBEE_HIVE_HEALTH__INTERVALL=1s"}}, []string{"health.intervall", "RBEE_HIVE_HEALTH__INTERVALL"}},
		{"invalid value", harness.DaemonOptions{Config: map[string]any{"health": map[string]any{"interval": "soon"}}}, []string{"health.interval"}},
		{"non-loopback bind without a token", harness.DaemonOptions{NoToken: true, Args: []string{"--bind", "0.0.0.0"}}, []string{"bind", "token"}},
	}
	for _, c := range cases {
		c.opts.NoWait = true
		d := e.StartDaemon(c.opts)
		st, err := d.Wait(30 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st.Success() {
			t.Fatalf("%s: exit 0, want a refusal\n%s", c.name, d.Log())
		}
		out := d.Log()
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: stderr does not name %q:\n%s", c.name, w, out)
			}
		}
		if strings.Contains(out, "listening") {
			t.Errorf("%s: the hive listened before refusing:\n%s", c.name, out)
		}
	}
}

// TestVersionAndHelp: --version prints the version /v1/health reports,
// --help the usage; both exit 0 without serving.
func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	version := e.StartDaemon(harness.DaemonOptions{NoWait: true, Args: []string{"--version"}})
	help := e.StartDaemon(harness.DaemonOptions{NoWait: true, Args: []string{"--help"}})
	for _, d := range []*harness.Daemon{version, help} {
		if st, err := d.Wait(30 * time.Second); err != nil || !st.Success() {
			t.Fatalf("exit %v %v:\n%s", st, err, d.Log())
		}
	}
	if !strings.Contains(help.Stdout(), "--config") || !strings.Contains(help.Stdout(), "RBEE_HIVE_") {
		t.Errorf("--help printed %q", help.Stdout())
	}
	d := e.StartDaemon(harness.DaemonOptions{})
	var h map[string]any
	d.RequestAuth("GET", "/v1/health", "", nil).JSON(t, &h)
	if want := fmt.Sprintf("rbee-hive %v\n", h["version"]); version.Stdout() != want {
		t.Errorf("--version printed %q, want %q", version.Stdout(), want)
	}
}

// TestLoopbackWithoutToken: with no token at all the hive serves on
// loopback, and then needs no Authorization header.
func TestLoopbackWithoutToken(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{NoToken: true})
	for _, path := range []string{"/v1/health", "/v1/status", "/v1/workers/list"} {
		if r := d.RequestAuth("GET", path, "", nil); r.Status != 200 {
			t.Errorf("GET %s without a token on a hive without one: %d %s", path, r.Status, r.Body)
		}
	}
}

// TestTOMLConfigTokenFileAudit runs the hive from a hand-written TOML file
// whose admin token lives in auth.token_file: the token from the file is
// the one accepted, and the state_dir's audit log records a denied request
// and an accepted mutating one, with a fingerprint but never the token.
func TestTOMLConfigTokenFileAudit(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	token := "toml-token-0123456789"
	tokenFile := e.Path("token")
	if err := os.WriteFile(tokenFile, []byte("  "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stateDir := e.Path("toml-state")
	cmd := harness.DefaultWorkerCommand(e.Bins.RefWorker)
	quoted := make([]string, len(cmd))
	for i, a := range cmd {
		quoted[i] = strconv.Quote(a)
	}
	toml := fmt.Sprintf("port = %d\nstate_dir = %q\n\n[auth]\ntoken_file = %q\n\n[worker]\ncommand = [%s]\ngrace = \"2s\"\n\n[provisioner]\nlocal_dirs = [%q]\n",
		port, stateDir, tokenFile, strings.Join(quoted, ", "), e.Path("models"))
	path := e.Path("hive.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	d := e.StartDaemon(harness.DaemonOptions{NoConfigFile: true, Args: []string{"--config", path},
		Port: port, PortVia: harness.ViaNowhere, Token: token, TokenVia: harness.ViaNowhere, StateDir: stateDir})

	if r := d.RequestAuth("GET", "/v1/status", "Bearer wrong", nil); r.Status != 401 {
		t.Fatalf("wrong token: %d", r.Status)
	}
	if r := d.Request("GET", "/v1/status", nil); r.Status != 200 {
		t.Fatalf("token from auth.token_file: %d %s", r.Status, r.Body)
	}
	ref := writeModel(t, e, "m.gguf", 1024)
	if r := d.Request("POST", "/v1/models/provision", map[string]string{"model_ref": ref}); r.Status != 200 && r.Status != 202 {
		t.Fatalf("provision %s: %d %s", ref, r.Status, r.Body)
	}
	var denied, accepted bool
	audit := ""
	harness.Poll(10*time.Second, 10*time.Millisecond, func() bool {
		b, _ := os.ReadFile(filepath.Join(stateDir, "audit.log"))
		audit = string(b)
		denied, accepted = false, false
		for _, line := range strings.Split(strings.TrimSpace(audit), "\n") {
			var ent map[string]any
			if json.Unmarshal([]byte(line), &ent) != nil {
				continue
			}
			switch {
			case ent["outcome"] == "denied" && ent["path"] == "/v1/status":
				denied = true
			case ent["method"] == "POST" && ent["path"] == "/v1/models/provision" && ent["token_fingerprint"] != "":
				accepted = true
			}
		}
		return denied && accepted
	})
	if !denied || !accepted {
		t.Errorf("audit.log lacks the denied GET or the accepted POST:\n%s", audit)
	}
	if strings.Contains(audit, token) {
		t.Errorf("audit.log holds the token")
	}
	if st := d.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("exit %s", st)
	}
}
