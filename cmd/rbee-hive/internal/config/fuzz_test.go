package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkLoaded fails unless a config that Load accepted keeps the promises
// of validate: a fuzzed file or environment may be refused, never let
// through half-checked.
func checkLoaded(t *testing.T, c Config, err error) {
	t.Helper()
	if err != nil {
		if errors.Is(err, ErrHelp) {
			t.Fatalf("Load returned ErrHelp without --help")
		}
		var ce *Error
		if errors.As(err, &ce) && (ce.Key == "" || ce.Problem == "") {
			t.Fatalf("error names no key or problem: %#v", ce)
		}
		return
	}
	switch {
	case c.Bind == "" || c.Port < 0 || c.Port > 65535:
		t.Fatalf("accepted bind %q port %d", c.Bind, c.Port)
	case c.Token == "" && !IsLoopback(c.Bind):
		t.Fatalf("accepted non-loopback bind %q without a token", c.Bind)
	case len(c.Worker.Command) == 0 || c.Worker.Command[0] == "":
		t.Fatalf("accepted worker.command %q", c.Worker.Command)
	case c.Worker.PortRange[0] < 1 || c.Worker.PortRange[0] > c.Worker.PortRange[1] || c.Worker.PortRange[1] > 65535:
		t.Fatalf("accepted worker.port_range %v", c.Worker.PortRange)
	case c.Worker.ReadyTimeout <= 0 || c.Health.Interval <= 0 || c.Health.Timeout <= 0 || c.Shutdown.Timeout <= 0:
		t.Fatalf("accepted a duration <= 0: %+v %+v %+v", c.Worker, c.Health, c.Shutdown)
	case c.Worker.Grace < 0 || c.Worker.LogMaxBytes <= 0 || c.Health.FailureThreshold < 1 || c.Events.Buffer < 1:
		t.Fatalf("accepted grace %s log_max_bytes %d failure_threshold %d events.buffer %d",
			c.Worker.Grace, c.Worker.LogMaxBytes, c.Health.FailureThreshold, c.Events.Buffer)
	case c.Resources.ReserveBytes < 0 || c.Provisioner.MaxCacheBytes < 0:
		t.Fatalf("accepted a negative size: reserve %d max_cache %d", c.Resources.ReserveBytes, c.Provisioner.MaxCacheBytes)
	}
	for _, d := range c.Provisioner.LocalDirs {
		if !filepath.IsAbs(d) {
			t.Fatalf("accepted relative local dir %q", d)
		}
	}
	if err := c.Restart.Config.Validate(); err != nil {
		t.Fatalf("accepted restart config that does not validate: %v", err)
	}
}

// FuzzConfigFile feeds arbitrary YAML and TOML files to Load: never a
// panic, and anything accepted is valid.
func FuzzConfigFile(f *testing.F) {
	f.Add(yamlFile, false)
	f.Add(tomlFile, true)
	f.Add("port: 9001\nbind: 127.0.0.2\nhealth: {interval: 2s, timeout: 3s}\n", false)
	f.Add("port = 9001\nbind = \"127.0.0.2\"\n[health]\ninterval = \"2s\"\n", true)
	f.Add("worker:\n  port_range: [9000, 8000]\n", false)
	f.Add("worker:\n  log_max_bytes: -1KiB\n", false)
	f.Add("bind: 0.0.0.0\n", false)
	f.Add("catalog:\n  - {name: a, model_ref: hf:a/b, vram_bytes: 1e30}\n  - {name: a}\n", false)
	f.Add("restart: {backoff: {jitter: 5, multiplier: -1}}\n", false)
	f.Add("health: {interval: -1s}\n", false)
	f.Add("a: &a [*a, *a]\nb: *a\n", false)
	f.Add("[worker]\ncommand = []\n", true)
	f.Add("port = 1e99\n", true)
	f.Add("~\n", false)
	f.Add("", true)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string, toml bool) {
		if len(content) > 16<<10 {
			return // a config file is small; huge inputs only slow the parsers down
		}
		name := "hive.yaml"
		if toml {
			name = "hive.toml"
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		var c Config
		var err error
		go func() {
			defer close(done)
			c, _, err = Load([]string{"--config", p}, []string{"HOME=/home/fuzz"})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Load of %d bytes still running after 10s: %q", len(content), content)
		}
		checkLoaded(t, c, err)
	})
}

// FuzzConfigEnv sets one RBEE_HIVE_ variable (a key chosen by the input,
// or an arbitrary name) to an arbitrary value.
func FuzzConfigEnv(f *testing.F) {
	for _, k := range keys {
		f.Add(uint16(0), EnvName(k.name), "")
	}
	f.Add(uint16(1), "", `["llama-server","-m","{model_path}"]`)
	f.Add(uint16(2), "", "9100-9200")
	f.Add(uint16(3), "", "9200-9100")
	f.Add(uint16(4), "", "-5")
	f.Add(uint16(5), "", "10MiB")
	f.Add(uint16(6), "", "99999999999999999999999EiB")
	f.Add(uint16(7), "", `[{"name":"tiny","model_ref":"hf:a/b","vram_bytes":"2GB"}]`)
	f.Add(uint16(8), "", "1h")
	f.Add(uint16(9), "", "::")
	f.Add(uint16(0), "RBEE_HIVE_TOKEN", "x\x00y")
	f.Add(uint16(0), "RBEE_HIVE_WORKER__NOPE", "1")
	f.Fuzz(func(t *testing.T, keyIndex uint16, name, value string) {
		if name == "" {
			name = EnvName(keys[int(keyIndex)%len(keys)].name)
		}
		if !strings.HasPrefix(name, EnvPrefix) || strings.ContainsAny(name, "=\x00") {
			name = EnvPrefix + strings.NewReplacer("=", "", "\x00", "").Replace(name)
		}
		c, _, err := Load(nil, []string{"HOME=/home/fuzz", name + "=" + value})
		checkLoaded(t, c, err)
	})
}

// FuzzParseSize: never a panic, never a negative size.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1048576", "10MiB", "1GB", "1.5 GiB", "-1", "+3kb", "1e3", ".", "NaN", "Inf", "9223372036854775807", "8EiB", "1..2MiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}
