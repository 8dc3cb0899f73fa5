package config

import (
	"time"

	"github.com/rbee-hive/rbee-hive/restart"
)

// kind says how a raw value (from a file, the environment or a flag) is read.
type kind int

const (
	kString    kind = iota
	kInt            // integer; from env a decimal string
	kBool           // true/false
	kFloat          // number
	kDuration       // Go duration string ("300ms")
	kSize           // bytes: an integer, or a string with a unit ("10MiB", "1GB")
	kStrings        // list of strings; from env a JSON array or comma-separated
	kPortRange      // [min, max]; from env a JSON array, "min,max" or "min-max"
	kCatalog        // list of catalog entries; from env a JSON array of objects
)

// key is one configuration key: its name, how it is read, its default, where
// the parsed value goes, and what it means (the README table is checked
// against this list).
type key struct {
	name   string
	kind   kind
	def    any    // in the form a file would give it
	doc    string // one line for the README
	target func(c *Config) any
}

// defaultCommand is DESIGN.md's default worker command.
var defaultCommand = []string{
	"llm-worker-rbee", "--worker-id", "{worker_id}", "--model", "{model_path}",
	"--model-ref", "{model_ref}", "--backend", "{backend}", "--device", "{device}",
	"--port", "{port}", "--callback-url", "{callback_url}",
}

var keys = []key{
	{"bind", kString, "127.0.0.1", "Address to listen on (flag `--bind`). Without a token only a loopback address is allowed.",
		func(c *Config) any { return &c.Bind }},
	{"port", kInt, 8080, "Port to listen on (flag `--port`); 0 picks a free port.",
		func(c *Config) any { return &c.Port }},
	{"state_dir", kString, "~/.local/state/rbee-hive", "Persisted registry, audit log (`audit.log`) and worker logs (`logs/`); `~` is expanded; \"\" = no persistence (workers never outlive the hive).",
		func(c *Config) any { return &c.StateDir }},
	{"auth.token", kString, "", "Admin bearer token. Also `RBEE_HIVE_TOKEN`.",
		func(c *Config) any { return &c.Auth.Token }},
	{"auth.token_file", kString, "", "File holding the admin token (surrounding whitespace trimmed); exclusive with `auth.token`.",
		func(c *Config) any { return &c.Auth.TokenFile }},
	{"worker.command", kStrings, defaultCommand, "Worker command line; placeholders `{worker_id} {model_path} {model_ref} {backend} {device} {port} {callback_url}`.",
		func(c *Config) any { return &c.Worker.Command }},
	{"worker.readiness", kString, "callback", "`callback` (the worker POSTs /v1/workers/ready) or `poll` (the hive GETs `{url}{worker.health_path}` until 200).",
		func(c *Config) any { return &c.Worker.Readiness }},
	{"worker.health_path", kString, "/health", "Path probed for readiness (poll) and health.",
		func(c *Config) any { return &c.Worker.HealthPath }},
	{"worker.port_range", kPortRange, []any{8081, 9000}, "Ports handed to workers, inclusive `[min, max]`.",
		func(c *Config) any { return &c.Worker.PortRange }},
	{"worker.ready_timeout", kDuration, "5m", "How long a worker may take from spawn to ready.",
		func(c *Config) any { return &c.Worker.ReadyTimeout }},
	{"worker.grace", kDuration, "10s", "Wait after the HTTP shutdown request before SIGTERM.",
		func(c *Config) any { return &c.Worker.Grace }},
	{"worker.log_max_bytes", kSize, "10MiB", "Size cap of each worker's stdout+stderr log.",
		func(c *Config) any { return &c.Worker.LogMaxBytes }},
	{"health.interval", kDuration, "10s", "Health probe period.",
		func(c *Config) any { return &c.Health.Interval }},
	{"health.timeout", kDuration, "5s", "Timeout of one health probe.",
		func(c *Config) any { return &c.Health.Timeout }},
	{"health.failure_threshold", kInt, 3, "Failed probes in a row that make a worker unhealthy (then restarted by policy).",
		func(c *Config) any { return &c.Health.FailureThreshold }},
	{"restart.policy", kString, "on-failure", "Default restart policy for spawns that do not say: `always`, `on-failure` or `never`.",
		func(c *Config) any { return &c.Restart.PolicyName }},
	{"restart.max_restarts", kInt, 5, "More restarts than this within `restart.window` marks the worker failed.",
		func(c *Config) any { return &c.Restart.MaxRestarts }},
	{"restart.window", kDuration, "10m", "Window over which restarts are counted.",
		func(c *Config) any { return &c.Restart.Window }},
	{"restart.stable_after", kDuration, "5m", "Ready this long resets the backoff and the restart count.",
		func(c *Config) any { return &c.Restart.StableAfter }},
	{"restart.backoff.initial", kDuration, "1s", "First restart delay.",
		func(c *Config) any { return &c.Restart.Backoff.Initial }},
	{"restart.backoff.max", kDuration, "60s", "Largest restart delay.",
		func(c *Config) any { return &c.Restart.Backoff.Max }},
	{"restart.backoff.multiplier", kFloat, 2, "Delay growth factor (>= 1).",
		func(c *Config) any { return &c.Restart.Backoff.Multiplier }},
	{"restart.backoff.jitter", kFloat, 0.2, "Each delay lies within ±jitter of the nominal one, in [0, 1).",
		func(c *Config) any { return &c.Restart.Backoff.Jitter }},
	{"shutdown.timeout", kDuration, "30s", "Deadline for the whole drain (downloads cancelled, every worker stopped).",
		func(c *Config) any { return &c.Shutdown.Timeout }},
	{"shutdown.leave_workers", kBool, false, "Leave workers running at shutdown for the next hive to re-adopt (needs `state_dir`).",
		func(c *Config) any { return &c.Shutdown.LeaveWorkers }},
	{"resources.nvml_mock", kString, "", "Use a go-nvml mock machine instead of the driver: `dgxa100`, `dgxb200`, `dgxh100`, `dgxh200`.",
		func(c *Config) any { return &c.Resources.NVMLMock }},
	{"resources.reserve_bytes", kSize, 0, "Memory kept free on every device for everything else.",
		func(c *Config) any { return &c.Resources.ReserveBytes }},
	{"provisioner.cache_dir", kString, "", "Hugging Face hub cache; \"\" = `HF_HUB_CACHE` → `$HF_HOME/hub` → `~/.cache/huggingface/hub`.",
		func(c *Config) any { return &c.Provisioner.CacheDir }},
	{"provisioner.hf_endpoint", kString, "", "Hub URL; \"\" = `HF_ENDPOINT` → https://huggingface.co.",
		func(c *Config) any { return &c.Provisioner.HFEndpoint }},
	{"provisioner.hf_token", kString, "", "Hub token for gated or private models; \"\" = `HF_TOKEN` → `$HF_HOME/token`.",
		func(c *Config) any { return &c.Provisioner.HFToken }},
	{"provisioner.local_dirs", kStrings, []any{}, "Absolute directories `file:` model references may point into.",
		func(c *Config) any { return &c.Provisioner.LocalDirs }},
	{"provisioner.max_cache_bytes", kSize, 0, "Cache size limit, least recently used unused models evicted; 0 = none.",
		func(c *Config) any { return &c.Provisioner.MaxCacheBytes }},
	{"catalog", kCatalog, []any{}, "Model names usable as `model_ref`: entries `{name, model_ref, description, size_bytes, vram_bytes}`.",
		func(c *Config) any { return &c.Catalog }},
	{"events.buffer", kInt, 4096, "Events kept for `Last-Event-ID` resume and per-subscriber buffering.",
		func(c *Config) any { return &c.Events.Buffer }},
	{"queen.url", kString, "", "queen-rbee base URL to push events to; \"\" = no push.",
		func(c *Config) any { return &c.Queen.URL }},
	{"queen.token", kString, "", "Bearer token for the queen.",
		func(c *Config) any { return &c.Queen.Token }},
	{"log.level", kString, "info", "`debug`, `info`, `warn` or `error`.",
		func(c *Config) any { return &c.Log.Level }},
	{"log.format", kString, "text", "`text` or `json` (log/slog on stderr).",
		func(c *Config) any { return &c.Log.Format }},
}

// catalogFields are the keys a catalog entry may have.
var catalogFields = map[string]kind{
	"name": kString, "model_ref": kString, "description": kString,
	"size_bytes": kSize, "vram_bytes": kSize,
}

// CatalogEntry is one configured model name (provisioner.CatalogEntry's
// fields; kept here so the config does not depend on the provisioner's build).
type CatalogEntry struct {
	Name        string
	ModelRef    string
	Description string
	SizeBytes   int64
	VRAMBytes   int64
}

// Config is the hive's whole configuration, parsed and validated.
type Config struct {
	Bind     string
	Port     int
	StateDir string // ~ expanded; "" = no persistence
	Auth     struct {
		Token     string
		TokenFile string
	}
	Worker struct {
		Command      []string
		Readiness    string
		HealthPath   string
		PortRange    [2]int
		ReadyTimeout time.Duration
		Grace        time.Duration
		LogMaxBytes  int64
	}
	Health struct {
		Interval         time.Duration
		Timeout          time.Duration
		FailureThreshold int
	}
	Restart struct {
		PolicyName string
		Policy     restart.Policy // parsed PolicyName
		restart.Config
	}
	Shutdown struct {
		Timeout      time.Duration
		LeaveWorkers bool
	}
	Resources struct {
		NVMLMock     string
		ReserveBytes int64
	}
	Provisioner struct {
		CacheDir      string
		HFEndpoint    string
		HFToken       string
		LocalDirs     []string
		MaxCacheBytes int64
	}
	Catalog []CatalogEntry
	Events  struct{ Buffer int }
	Queen   struct{ URL, Token string }
	Log     struct{ Level, Format string }

	// Token is the admin token in effect (auth.token, the content of
	// auth.token_file, or RBEE_HIVE_TOKEN); "" = none.
	Token string
	// File is the config file that was read; "" = none.
	File string
}

// KeyDoc documents one key.
type KeyDoc struct {
	Name    string
	Default string // as written in YAML
	Env     string // the environment variable
	Doc     string
}

// Keys documents every configuration key, in the order of DESIGN.md.
func Keys() []KeyDoc {
	out := make([]KeyDoc, len(keys))
	for i, k := range keys {
		out[i] = KeyDoc{Name: k.name, Default: showDefault(k.def), Env: EnvName(k.name), Doc: k.doc}
	}
	return out
}
