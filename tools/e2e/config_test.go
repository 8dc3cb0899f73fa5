package e2e

import (
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
				t.Errorf("%s: output does not name %q:\n%s", c.name, w, out)
			}
		}
	}
}

// TestLoopbackWithoutToken: with no token at all the hive serves on
// loopback, and then needs no Authorization header.
func TestLoopbackWithoutToken(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{NoToken: true})
	if r := d.RequestAuth("GET", "/v1/health", "", nil); r.Status != 200 {
		t.Fatalf("health: %d", r.Status)
	}
}
