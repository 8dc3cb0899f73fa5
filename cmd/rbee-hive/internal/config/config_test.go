package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/restart"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, args []string, env ...string) Config {
	t.Helper()
	c, _, err := Load(args, append([]string{"HOME=/home/test"}, env...))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

// loadErr expects an *Error naming key, with source containing src.
func loadErr(t *testing.T, args []string, env []string, key, src string) *Error {
	t.Helper()
	_, _, err := Load(args, append([]string{"HOME=/home/test"}, env...))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load = %v, want a *config.Error naming %s", err, key)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("%v does not match ErrInvalid", err)
	}
	if ce.Key != key || !strings.Contains(ce.Source, src) || !strings.Contains(err.Error(), key) {
		t.Fatalf("error %q: key %q source %q, want key %q source containing %q", err, ce.Key, ce.Source, key, src)
	}
	return ce
}

func TestDefaults(t *testing.T) {
	c := load(t, nil)
	if c.Bind != "127.0.0.1" || c.Port != 8080 {
		t.Errorf("listen %s:%d, want 127.0.0.1:8080", c.Bind, c.Port)
	}
	if c.StateDir != "/home/test/.local/state/rbee-hive" {
		t.Errorf("state_dir %q: ~ not expanded from HOME", c.StateDir)
	}
	if !reflect.DeepEqual(c.Worker.Command, defaultCommand) {
		t.Errorf("worker.command %q", c.Worker.Command)
	}
	if c.Worker.PortRange != [2]int{8081, 9000} || c.Worker.ReadyTimeout != 5*time.Minute ||
		c.Worker.Grace != 10*time.Second || c.Worker.LogMaxBytes != 10<<20 || c.Worker.Readiness != "callback" ||
		c.Worker.HealthPath != "/health" {
		t.Errorf("worker defaults %+v", c.Worker)
	}
	if c.Health.Interval != 10*time.Second || c.Health.Timeout != 5*time.Second || c.Health.FailureThreshold != 3 {
		t.Errorf("health defaults %+v", c.Health)
	}
	if c.Restart.Policy != restart.OnFailure || !reflect.DeepEqual(c.Restart.Config, restart.DefaultConfig()) {
		t.Errorf("restart defaults %+v, want %+v", c.Restart, restart.DefaultConfig())
	}
	if c.Shutdown.Timeout != 30*time.Second || c.Shutdown.LeaveWorkers {
		t.Errorf("shutdown defaults %+v", c.Shutdown)
	}
	if c.Events.Buffer != 4096 || c.Token != "" || len(c.Catalog) != 0 || len(c.Provisioner.LocalDirs) != 0 {
		t.Errorf("defaults: events %d token %q catalog %v local_dirs %v", c.Events.Buffer, c.Token, c.Catalog, c.Provisioner.LocalDirs)
	}
}

const yamlFile = `
port: 9001
bind: 127.0.0.2
state_dir: ~/hive
worker:
  command: [llama-server, -m, "{model_path}", --port, "{port}"]
  readiness: poll
  port_range: [10000, 10010]
  ready_timeout: 30s
  log_max_bytes: 1MiB
health: {interval: 2s, failure_threshold: 5}
restart:
  policy: always
  backoff: {initial: 100ms, multiplier: 1.5}
shutdown: {timeout: 7s, leave_workers: true}
resources: {nvml_mock: dgxh100, reserve_bytes: "1GB"}
provisioner: {local_dirs: [/models], max_cache_bytes: 2048}
catalog:
  - {name: tiny, model_ref: "hf:org/tiny/model.gguf", vram_bytes: 1500000000, description: "tiny one"}
  - {name: small, model_ref: "file:/models/small.gguf", size_bytes: 1GiB}
events: {buffer: 16}
queen: {url: "http://127.0.0.1:7833", token: q}
`

const tomlFile = `
port = 9001
bind = "127.0.0.2"
state_dir = "~/hive"

[worker]
command = ["llama-server", "-m", "{model_path}", "--port", "{port}"]
readiness = "poll"
port_range = [10000, 10010]
ready_timeout = "30s"
log_max_bytes = "1MiB"

[health]
interval = "2s"
failure_threshold = 5

[restart]
policy = "always"
[restart.backoff]
initial = "100ms"
multiplier = 1.5

[shutdown]
timeout = "7s"
leave_workers = true

[resources]
nvml_mock = "dgxh100"
reserve_bytes = "1GB"

[provisioner]
local_dirs = ["/models"]
max_cache_bytes = 2048

[[catalog]]
name = "tiny"
model_ref = "hf:org/tiny/model.gguf"
vram_bytes = 1500000000
description = "tiny one"

[[catalog]]
name = "small"
model_ref = "file:/models/small.gguf"
size_bytes = "1GiB"

[events]
buffer = 16

[queen]
url = "http://127.0.0.1:7833"
token = "q"
`

func checkFileValues(t *testing.T, c Config) {
	t.Helper()
	if c.Port != 9001 || c.Bind != "127.0.0.2" || c.StateDir != "/home/test/hive" {
		t.Errorf("listen %s:%d state_dir %q", c.Bind, c.Port, c.StateDir)
	}
	if !reflect.DeepEqual(c.Worker.Command, []string{"llama-server", "-m", "{model_path}", "--port", "{port}"}) ||
		c.Worker.Readiness != "poll" || c.Worker.PortRange != [2]int{10000, 10010} ||
		c.Worker.ReadyTimeout != 30*time.Second || c.Worker.LogMaxBytes != 1<<20 {
		t.Errorf("worker %+v", c.Worker)
	}
	if c.Worker.Grace != 10*time.Second || c.Health.Timeout != 5*time.Second {
		t.Errorf("keys the file does not set lost their defaults: grace %v health.timeout %v", c.Worker.Grace, c.Health.Timeout)
	}
	if c.Health.Interval != 2*time.Second || c.Health.FailureThreshold != 5 {
		t.Errorf("health %+v", c.Health)
	}
	if c.Restart.Policy != restart.Always || c.Restart.Backoff.Initial != 100*time.Millisecond ||
		c.Restart.Backoff.Multiplier != 1.5 || c.Restart.Backoff.Max != time.Minute {
		t.Errorf("restart %+v", c.Restart)
	}
	if c.Shutdown.Timeout != 7*time.Second || !c.Shutdown.LeaveWorkers {
		t.Errorf("shutdown %+v", c.Shutdown)
	}
	if c.Resources.NVMLMock != "dgxh100" || c.Resources.ReserveBytes != 1e9 {
		t.Errorf("resources %+v", c.Resources)
	}
	if !reflect.DeepEqual(c.Provisioner.LocalDirs, []string{"/models"}) || c.Provisioner.MaxCacheBytes != 2048 {
		t.Errorf("provisioner %+v", c.Provisioner)
	}
	want := []CatalogEntry{
		{Name: "tiny", ModelRef: "hf:org/tiny/model.gguf", VRAMBytes: 1500000000, Description: "tiny one"},
		{Name: "small", ModelRef: "file:/models/small.gguf", SizeBytes: 1 << 30},
	}
	if !reflect.DeepEqual(c.Catalog, want) {
		t.Errorf("catalog %+v, want %+v", c.Catalog, want)
	}
	if c.Events.Buffer != 16 || c.Queen.URL != "http://127.0.0.1:7833" || c.Queen.Token != "q" {
		t.Errorf("events %d queen %+v", c.Events.Buffer, c.Queen)
	}
}

func TestFileYAMLAndTOML(t *testing.T) {
	for _, f := range []struct{ name, content string }{{"hive.yaml", yamlFile}, {"hive.toml", tomlFile}} {
		t.Run(f.name, func(t *testing.T) {
			p := write(t, f.name, f.content)
			c := load(t, []string{"--config", p})
			checkFileValues(t, c)
			if c.File != p {
				t.Errorf("File %q", c.File)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	for _, name := range []string{"hive.yaml", "hive.toml"} {
		t.Run(name, func(t *testing.T) {
			content := "port: 9001\nbind: 127.0.0.2\nhealth: {interval: 2s, timeout: 3s}\n"
			if strings.HasSuffix(name, ".toml") {
				content = "port = 9001\nbind = \"127.0.0.2\"\n[health]\ninterval = \"2s\"\ntimeout = \"3s\"\n"
			}
			p := write(t, name, content)
			args := []string{"--config", p}

			c := load(t, args) // file over defaults
			if c.Port != 9001 || c.Bind != "127.0.0.2" || c.Health.Interval != 2*time.Second || c.Health.Timeout != 3*time.Second {
				t.Fatalf("file: %s:%d %+v", c.Bind, c.Port, c.Health)
			}
			env := []string{"RBEE_HIVE_PORT=9002", "RBEE_HIVE_HEALTH__INTERVAL=4s"}
			c = load(t, args, env...) // env over file
			if c.Port != 9002 || c.Health.Interval != 4*time.Second || c.Health.Timeout != 3*time.Second || c.Bind != "127.0.0.2" {
				t.Fatalf("env: %s:%d %+v", c.Bind, c.Port, c.Health)
			}
			c = load(t, append(args, "--port", "9003", "--bind=127.0.0.3"), env...) // flags over env
			if c.Port != 9003 || c.Bind != "127.0.0.3" || c.Health.Interval != 4*time.Second {
				t.Fatalf("flags: %s:%d %+v", c.Bind, c.Port, c.Health)
			}
		})
	}
}

func TestEnvLists(t *testing.T) {
	c := load(t, nil,
		`RBEE_HIVE_WORKER__COMMAND=["llama-server","-m","{model_path}","--alias","a,b"]`,
		"RBEE_HIVE_WORKER__PORT_RANGE=9100-9200",
		"RBEE_HIVE_PROVISIONER__LOCAL_DIRS=/models, /data/models",
		`RBEE_HIVE_CATALOG=[{"name":"tiny","model_ref":"hf:a/b","vram_bytes":"2GB"}]`,
		"RBEE_HIVE_SHUTDOWN__LEAVE_WORKERS=true",
		"RBEE_HIVE_RESTART__BACKOFF__JITTER=0.1",
		"RBEE_HIVE_WORKER__LOG_MAX_BYTES=4096",
	)
	if !reflect.DeepEqual(c.Worker.Command, []string{"llama-server", "-m", "{model_path}", "--alias", "a,b"}) {
		t.Errorf("worker.command %q", c.Worker.Command)
	}
	if c.Worker.PortRange != [2]int{9100, 9200} {
		t.Errorf("port_range %v", c.Worker.PortRange)
	}
	if !reflect.DeepEqual(c.Provisioner.LocalDirs, []string{"/models", "/data/models"}) {
		t.Errorf("local_dirs %q", c.Provisioner.LocalDirs)
	}
	if len(c.Catalog) != 1 || c.Catalog[0].VRAMBytes != 2e9 || c.Catalog[0].Name != "tiny" {
		t.Errorf("catalog %+v", c.Catalog)
	}
	if !c.Shutdown.LeaveWorkers || c.Restart.Backoff.Jitter != 0.1 || c.Worker.LogMaxBytes != 4096 {
		t.Errorf("leave_workers %v jitter %v log_max_bytes %d", c.Shutdown.LeaveWorkers, c.Restart.Backoff.Jitter, c.Worker.LogMaxBytes)
	}
	c = load(t, nil, "RBEE_HIVE_WORKER__PORT_RANGE=9100,9101", "RBEE_HIVE_STATE_DIR=")
	if c.Worker.PortRange != [2]int{9100, 9101} || c.StateDir != "" {
		t.Errorf("port_range %v state_dir %q", c.Worker.PortRange, c.StateDir)
	}
}

func TestUnknownKeys(t *testing.T) {
	p := write(t, "hive.yaml", "worker:\n  readyness: poll\n")
	loadErr(t, []string{"--config", p}, nil, "worker.readyness", "file "+p)

	p = write(t, "hive.toml", "[helth]\ninterval = \"1s\"\n")
	loadErr(t, []string{"--config", p}, nil, "helth.interval", "file "+p)

	p = write(t, "hive.yaml", "health: 5\n")
	loadErr(t, []string{"--config", p}, nil, "health", "file")

	loadErr(t, nil, []string{"RBEE_HIVE_WORKER__GRACEFUL=1s"}, "worker.graceful", "env RBEE_HIVE_WORKER__GRACEFUL")
	loadErr(t, nil, []string{"RBEE_HIVE_PROT=1"}, "prot", "env RBEE_HIVE_PROT")

	p = write(t, "hive.yaml", "catalog:\n  - {name: a, model_ref: 'hf:a/b', vram: 1}\n")
	ce := loadErr(t, []string{"--config", p}, nil, "catalog", "file")
	if !strings.Contains(ce.Problem, `"vram"`) {
		t.Errorf("problem %q does not name the catalog field", ce.Problem)
	}

	// An empty section is not unknown and keeps its defaults.
	p = write(t, "hive.yaml", "auth:\nhealth: {}\n")
	if c := load(t, []string{"--config", p}); c.Health.Interval != 10*time.Second {
		t.Errorf("empty section lost defaults: %+v", c.Health)
	}
	// RBEE_HIVE_URL is what the hive sets for its workers, not a key.
	load(t, nil, "RBEE_HIVE_URL=http://127.0.0.1:8080")
}

func TestInvalidValues(t *testing.T) {
	cases := []struct {
		env []string
		key string
	}{
		{[]string{"RBEE_HIVE_PORT=http"}, "port"},
		{[]string{"RBEE_HIVE_PORT=70000"}, "port"},
		{[]string{"RBEE_HIVE_PORT=-1"}, "port"},
		{[]string{"RBEE_HIVE_BIND=127.0.0.1:80"}, "bind"},
		{[]string{"RBEE_HIVE_WORKER__READY_TIMEOUT=5 minutes"}, "worker.ready_timeout"},
		{[]string{"RBEE_HIVE_WORKER__READY_TIMEOUT=0s"}, "worker.ready_timeout"},
		{[]string{"RBEE_HIVE_WORKER__GRACE=-1s"}, "worker.grace"},
		{[]string{"RBEE_HIVE_HEALTH__INTERVAL=-1s"}, "health.interval"},
		{[]string{"RBEE_HIVE_WORKER__LOG_MAX_BYTES=-10MiB"}, "worker.log_max_bytes"},
		{[]string{"RBEE_HIVE_WORKER__LOG_MAX_BYTES=10 parsecs"}, "worker.log_max_bytes"},
		{[]string{"RBEE_HIVE_RESOURCES__RESERVE_BYTES=-1"}, "resources.reserve_bytes"},
		{[]string{"RBEE_HIVE_PROVISIONER__MAX_CACHE_BYTES=lots"}, "provisioner.max_cache_bytes"},
		{[]string{"RBEE_HIVE_WORKER__PORT_RANGE=9000-8000"}, "worker.port_range"},
		{[]string{"RBEE_HIVE_WORKER__PORT_RANGE=[1,2,3]"}, "worker.port_range"},
		{[]string{"RBEE_HIVE_WORKER__PORT_RANGE=0-10"}, "worker.port_range"},
		{[]string{"RBEE_HIVE_WORKER__READINESS=push"}, "worker.readiness"},
		{[]string{"RBEE_HIVE_WORKER__HEALTH_PATH=health"}, "worker.health_path"},
		{[]string{"RBEE_HIVE_WORKER__COMMAND="}, "worker.command"},
		{[]string{"RBEE_HIVE_RESTART__POLICY=sometimes"}, "restart.policy"},
		{[]string{"RBEE_HIVE_RESTART__POLICY="}, "restart.policy"},
		{[]string{"RBEE_HIVE_RESTART__BACKOFF__MULTIPLIER=0.5"}, "restart.backoff.multiplier"},
		{[]string{"RBEE_HIVE_RESTART__BACKOFF__JITTER=1"}, "restart.backoff.jitter"},
		{[]string{"RBEE_HIVE_RESTART__MAX_RESTARTS=-1"}, "restart.max_restarts"},
		{[]string{"RBEE_HIVE_HEALTH__FAILURE_THRESHOLD=0"}, "health.failure_threshold"},
		{[]string{"RBEE_HIVE_RESOURCES__NVML_MOCK=dgx9000"}, "resources.nvml_mock"},
		{[]string{"RBEE_HIVE_SHUTDOWN__LEAVE_WORKERS=maybe"}, "shutdown.leave_workers"},
		{[]string{"RBEE_HIVE_SHUTDOWN__LEAVE_WORKERS=true", "RBEE_HIVE_STATE_DIR="}, "shutdown.leave_workers"},
		{[]string{"RBEE_HIVE_SHUTDOWN__TIMEOUT=0s"}, "shutdown.timeout"},
		{[]string{"RBEE_HIVE_EVENTS__BUFFER=0"}, "events.buffer"},
		{[]string{"RBEE_HIVE_QUEEN__URL=queen:7833"}, "queen.url"},
		{[]string{"RBEE_HIVE_PROVISIONER__HF_ENDPOINT=ftp://hub"}, "provisioner.hf_endpoint"},
		{[]string{"RBEE_HIVE_PROVISIONER__LOCAL_DIRS=models"}, "provisioner.local_dirs"},
		{[]string{`RBEE_HIVE_CATALOG=[{"name":"a"}]`}, "catalog"},
		{[]string{`RBEE_HIVE_CATALOG=tiny`}, "catalog"},
		{[]string{`RBEE_HIVE_CATALOG=[{"name":"a","model_ref":"hf:a/b"},{"name":"a","model_ref":"hf:a/c"}]`}, "catalog[1].name"},
		{[]string{"RBEE_HIVE_LOG__LEVEL=loud"}, "log.level"},
		{[]string{"RBEE_HIVE_LOG__FORMAT=xml"}, "log.format"},
	}
	for _, tc := range cases {
		t.Run(tc.key+" "+strings.Join(tc.env, " "), func(t *testing.T) {
			loadErr(t, nil, tc.env, tc.key, "")
		})
	}

	// Wrong types from a file name the key and the file.
	p := write(t, "hive.yaml", "health:\n  interval: 10\n")
	loadErr(t, []string{"--config", p}, nil, "health.interval", "file "+p)
	p = write(t, "hive.yaml", "worker:\n  command: llama-server\n")
	if c := load(t, []string{"--config", p}); !reflect.DeepEqual(c.Worker.Command, []string{"llama-server"}) {
		t.Errorf("a one-word command string: %q", c.Worker.Command)
	}
	p = write(t, "hive.yaml", "worker:\n  command: [llama-server, 5]\n")
	loadErr(t, []string{"--config", p}, nil, "worker.command", "file")
	p = write(t, "hive.toml", "port = \"eighty\"\n")
	loadErr(t, []string{"--config", p}, nil, "port", "file")

	// The flag source is named too.
	loadErr(t, []string{"--port", "70000"}, nil, "port", "flag --port")
}

func TestBadFilesAndArgs(t *testing.T) {
	for _, args := range [][]string{
		{"--config", filepath.Join(t.TempDir(), "missing.yaml")},
		{"--config", write(t, "hive.json", "{}")},
		{"--config", write(t, "hive.yaml", "port: [\n")},
		{"--config", write(t, "hive.toml", "port = \n")},
		{"--port", "abc"},
		{"--frobnicate"},
		{"serve"},
	} {
		if _, _, err := Load(args, nil); err == nil {
			t.Errorf("Load(%q) succeeded", args)
		}
	}
	if _, opts, err := Load([]string{"--help"}, nil); !errors.Is(err, ErrHelp) || !opts.Help {
		t.Errorf("--help: %v %+v", err, opts)
	}
	if _, opts, err := Load([]string{"--version"}, []string{"HOME=/h"}); err != nil || !opts.Version {
		t.Errorf("--version: %v %+v", err, opts)
	}
	if !strings.Contains(Usage(), "--config") {
		t.Errorf("usage: %s", Usage())
	}
	// HOME missing: ~ cannot be expanded, and that names state_dir.
	_, _, err := Load(nil, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "state_dir" {
		t.Errorf("no HOME: %v", err)
	}
}

func TestToken(t *testing.T) {
	// A non-loopback bind without a token refuses to start, naming bind.
	for _, bind := range []string{"0.0.0.0", "::", "10.1.2.3", "hive.example"} {
		ce := loadErr(t, []string{"--bind", bind}, nil, "bind", "flag --bind")
		if !strings.Contains(ce.Problem, "token") {
			t.Errorf("%s: %q does not mention the token", bind, ce.Problem)
		}
	}
	for _, bind := range []string{"127.0.0.1", "localhost", "::1", "127.9.9.9"} {
		load(t, []string{"--bind", bind})
	}

	c := load(t, []string{"--bind", "0.0.0.0"}, "RBEE_HIVE_TOKEN=short")
	if c.Token != "short" {
		t.Errorf("RBEE_HIVE_TOKEN: %q", c.Token)
	}
	c = load(t, []string{"--bind", "0.0.0.0"}, "RBEE_HIVE_AUTH__TOKEN=long")
	if c.Token != "long" {
		t.Errorf("RBEE_HIVE_AUTH__TOKEN: %q", c.Token)
	}
	load(t, nil, "RBEE_HIVE_TOKEN=same", "RBEE_HIVE_AUTH__TOKEN=same")
	loadErr(t, nil, []string{"RBEE_HIVE_TOKEN=a", "RBEE_HIVE_AUTH__TOKEN=b"}, "auth.token", "RBEE_HIVE_TOKEN")

	tf := write(t, "token", "  s3cret\n")
	p := write(t, "hive.yaml", "bind: 0.0.0.0\nauth: {token_file: "+tf+"}\n")
	if c = load(t, []string{"--config", p}); c.Token != "s3cret" {
		t.Errorf("token_file: %q", c.Token)
	}
	loadErr(t, []string{"--config", p}, []string{"RBEE_HIVE_TOKEN=x"}, "auth.token_file", "file")
	loadErr(t, nil, []string{"RBEE_HIVE_AUTH__TOKEN_FILE=" + filepath.Join(t.TempDir(), "none")}, "auth.token_file", "env")
	loadErr(t, nil, []string{"RBEE_HIVE_AUTH__TOKEN_FILE=" + write(t, "empty", "\n")}, "auth.token_file", "env")
	// ~ in token_file comes from HOME.
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "tok"), []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(nil, []string{"HOME=" + home, "RBEE_HIVE_AUTH__TOKEN_FILE=~/tok"})
	if err != nil || c.Token != "t" {
		t.Errorf("~/tok: %q %v", c.Token, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[any]int64{
		"10MiB": 10 << 20, "1GB": 1e9, "1.5GiB": 3 << 29, "512": 512, "2 kb": 2000, "0": 0, 7: 7,
		int64(8): 8, float64(9): 9, "3TiB": 3 << 40, "100B": 100,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%v) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []any{"-1", -1, "10M", "MiB", "", "1e400GiB", 1.5, true, "1..2GB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%v) = %d, want an error", in, got)
		}
	}
}

// TestREADME keeps the README's configuration table in step with the keys.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Skipf("README not found: %v", err)
	}
	readme := string(b)
	i := strings.Index(readme, "\n## Configuration")
	if i < 0 {
		t.Fatal("README has no Configuration section")
	}
	section := readme[i:]
	if j := strings.Index(section[1:], "\n## "); j >= 0 {
		section = section[:j+1]
	}
	for _, k := range Keys() {
		row := "| `" + k.Name + "` | `" + k.Default + "` |"
		if !strings.Contains(section, row) {
			t.Errorf("README Configuration lacks the row %s", row)
		}
	}
}

func TestEmptyFileAndNullValues(t *testing.T) {
	c := load(t, []string{"--config", write(t, "hive.yaml", "")})
	if c.Port != 8080 {
		t.Errorf("empty file: port %d", c.Port)
	}
	c = load(t, []string{"--config", write(t, "hive.yaml", "auth:\n  token:\nprovisioner:\n  local_dirs:\ncatalog:\nport: 9009\n")})
	if c.Token != "" || len(c.Provisioner.LocalDirs) != 0 || len(c.Catalog) != 0 || c.Port != 9009 {
		t.Errorf("null values: token %q local_dirs %q catalog %v port %d", c.Token, c.Provisioner.LocalDirs, c.Catalog, c.Port)
	}
}
