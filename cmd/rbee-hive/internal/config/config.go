// Package config loads rbee-hive's configuration with koanf: defaults < a
// YAML or TOML file (--config) < RBEE_HIVE_ environment variables < flags
// (--port, --bind). Every key is known in advance: an unknown key or an
// invalid value is an error naming the key and where it came from.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

// EnvPrefix starts every environment variable the hive reads.
const EnvPrefix = "RBEE_HIVE_"

// TokenEnv is the short form of RBEE_HIVE_AUTH__TOKEN.
const TokenEnv = "RBEE_HIVE_TOKEN"

// workerEnv is set by the hive for its workers; a hive started from inside a
// worker's environment must not take it for a config key.
const workerEnv = "RBEE_HIVE_URL"

// ErrInvalid is matched by every *Error.
var ErrInvalid = errors.New("invalid configuration")

// ErrHelp is returned by Load for --help; the caller prints Usage and exits 0.
var ErrHelp = pflag.ErrHelp

// Error names the key that is wrong and where its value came from.
type Error struct {
	Key     string
	Source  string // "file /etc/rbee-hive.yaml", "env RBEE_HIVE_PORT", "flag --port", "default"; "" when not one source
	Problem string
}

func (e *Error) Error() string {
	s := "config: " + e.Key
	if e.Source != "" {
		s += " (" + e.Source + ")"
	}
	return s + ": " + e.Problem
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Options are the command-line switches that are not config keys.
type Options struct {
	Help    bool
	Version bool
}

// EnvName returns the environment variable of a key: worker.ready_timeout is
// RBEE_HIVE_WORKER__READY_TIMEOUT.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "__"))
}

// flagSet declares the command line.
func flagSet() *pflag.FlagSet {
	fs := pflag.NewFlagSet("rbee-hive", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("port", 8080, "port to listen on (config key port)")
	fs.String("bind", "127.0.0.1", "address to listen on (config key bind)")
	fs.String("config", "", "YAML (.yaml, .yml) or TOML (.toml) config file")
	fs.Bool("version", false, "print the version and exit")
	return fs
}

// Usage describes the command line.
func Usage() string {
	return "Usage: rbee-hive [--config FILE] [--bind ADDR] [--port N] [--version]\n\n" +
		flagSet().FlagUsages() +
		"\nEvery config key can also be set as " + EnvPrefix + "<KEY> with __ for nesting\n" +
		"(RBEE_HIVE_WORKER__READY_TIMEOUT=30s); see the README for the keys.\n"
}

// Load reads the configuration from the command-line arguments (without the
// program name) and the environment (os.Environ form; HOME is taken from it
// for ~ expansion). It returns ErrHelp for --help.
func Load(args, environ []string) (Config, Options, error) {
	var opts Options
	fs := flagSet()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Config{}, Options{Help: true}, ErrHelp
		}
		return Config{}, opts, fmt.Errorf("command line: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, opts, fmt.Errorf("command line: unexpected argument %q (rbee-hive has no subcommands)", fs.Arg(0))
	}
	opts.Version, _ = fs.GetBool("version")
	path, _ := fs.GetString("config")

	l := &loader{k: koanf.New("."), source: make(map[string]string)}
	if err := l.defaults(); err != nil {
		return Config{}, opts, err
	}
	if path != "" {
		if err := l.file(path); err != nil {
			return Config{}, opts, err
		}
	}
	if err := l.env(environ); err != nil {
		return Config{}, opts, err
	}
	if err := l.flags(fs); err != nil {
		return Config{}, opts, err
	}
	c, err := l.build(environ)
	if err != nil {
		return Config{}, opts, err
	}
	c.File = path
	return c, opts, nil
}

// loader merges the sources, remembering where each key's value came from.
type loader struct {
	k      *koanf.Koanf
	source map[string]string
}

func (l *loader) defaults() error {
	flat := make(map[string]any, len(keys))
	for _, k := range keys {
		flat[k.name] = k.def
	}
	return l.merge(confmap.Provider(flat, "."), nil, func(string) string { return "default" })
}

func (l *loader) file(path string) error {
	var p koanf.Parser
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		p = yaml.Parser()
	case ".toml":
		p = toml.Parser()
	default:
		return fmt.Errorf("config file %s: unknown format (want .yaml, .yml or .toml)", path)
	}
	src := "file " + path
	if err := l.merge(file.Provider(path), p, func(string) string { return src }); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

func (l *loader) env(environ []string) error {
	names := make(map[string]string) // key → variable, for messages
	var short, long *string          // the two spellings of the token
	p := env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, val string) (string, any) {
			if name == workerEnv {
				return "", nil
			}
			key := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), "__", "."))
			switch name {
			case TokenEnv:
				key, short = "auth.token", &val
			case EnvName("auth.token"):
				long = &val
			}
			names[key] = name
			return key, val
		},
	})
	mp, err := p.Read()
	if err != nil {
		return fmt.Errorf("environment: %w", err)
	}
	if short != nil && long != nil {
		if *short != *long {
			return &Error{Key: "auth.token", Source: "env " + TokenEnv + " and " + EnvName("auth.token"), Problem: "set to different values"}
		}
		mp["auth"] = map[string]any{"token": *short}
	}
	return l.merge(confmap.Provider(mp, "."), nil, func(key string) string {
		if n, ok := names[key]; ok {
			return "env " + n
		}
		return "env " + EnvName(key)
	})
}

func (l *loader) flags(fs *pflag.FlagSet) error {
	p := posflag.ProviderWithFlag(fs, ".", nil, func(f *pflag.Flag) (string, any) {
		switch f.Name {
		case "port", "bind":
			return f.Name, posflag.FlagVal(fs, f)
		}
		return "", nil
	})
	return l.merge(p, nil, func(key string) string { return "flag --" + key })
}

// merge loads one source on its own, rejects keys nobody knows, and merges
// it over what is there.
func (l *loader) merge(p koanf.Provider, parser koanf.Parser, sourceOf func(key string) string) error {
	k := koanf.New(".")
	if err := k.Load(p, parser); err != nil {
		return err
	}
	for key, val := range k.All() {
		if err := checkKnown(key, val); err != nil {
			err.Source = sourceOf(key)
			return err
		}
	}
	for key, val := range k.All() {
		if knownKey(key) && val != nil {
			l.source[key] = sourceOf(key)
		} else {
			// An empty section, or a key left empty (YAML null), must not
			// wipe the defaults: it counts as not set.
			k.Delete(key)
		}
	}
	return l.k.Merge(k)
}

func knownKey(name string) bool {
	for _, k := range keys {
		if k.name == name {
			return true
		}
	}
	return false
}

// checkKnown accepts a flattened key that is a known key, or an empty
// section ("auth:" with nothing under it).
func checkKnown(name string, val any) *Error {
	if knownKey(name) {
		return nil
	}
	section := false
	for _, k := range keys {
		if strings.HasPrefix(k.name, name+".") {
			section = true
			break
		}
	}
	if section {
		if m, ok := val.(map[string]any); val == nil || ok && len(m) == 0 {
			return nil
		}
		return &Error{Key: name, Problem: "must be a table of keys, not a value"}
	}
	return &Error{Key: name, Problem: "unknown key"}
}

// build parses every key into a Config and validates it.
func (l *loader) build(environ []string) (Config, error) {
	var c Config
	for _, k := range keys {
		if err := assign(k.kind, l.k.Get(k.name), k.target(&c)); err != nil {
			return Config{}, &Error{Key: k.name, Source: l.source[k.name], Problem: err.Error()}
		}
	}
	home := lookup(environ, "HOME")
	expand := func(name string, p *string) error {
		out, err := expandHome(*p, home)
		if err != nil {
			return &Error{Key: name, Source: l.source[name], Problem: err.Error()}
		}
		*p = out
		return nil
	}
	for name, p := range map[string]*string{
		"state_dir": &c.StateDir, "auth.token_file": &c.Auth.TokenFile, "provisioner.cache_dir": &c.Provisioner.CacheDir,
	} {
		if err := expand(name, p); err != nil {
			return Config{}, err
		}
	}
	for i := range c.Provisioner.LocalDirs {
		if err := expand("provisioner.local_dirs", &c.Provisioner.LocalDirs[i]); err != nil {
			return Config{}, err
		}
	}
	if err := l.validate(&c); err != nil {
		return Config{}, err
	}
	if err := l.resolveToken(&c); err != nil {
		return Config{}, err
	}
	if c.Token == "" && !IsLoopback(c.Bind) {
		return Config{}, &Error{Key: "bind", Source: l.source["bind"], Problem: fmt.Sprintf(
			"refusing to serve on non-loopback address %q without an admin token (set auth.token, auth.token_file or %s)", c.Bind, TokenEnv)}
	}
	return c, nil
}

func (l *loader) resolveToken(c *Config) error {
	c.Token = c.Auth.Token
	if c.Auth.TokenFile == "" {
		return nil
	}
	bad := func(problem string) error {
		return &Error{Key: "auth.token_file", Source: l.source["auth.token_file"], Problem: problem}
	}
	if c.Auth.Token != "" {
		return bad("set together with auth.token (from " + l.source["auth.token"] + "); use one")
	}
	b, err := os.ReadFile(c.Auth.TokenFile)
	if err != nil {
		return bad(err.Error())
	}
	c.Token = strings.TrimSpace(string(b))
	if c.Token == "" {
		return bad(c.Auth.TokenFile + " is empty")
	}
	return nil
}

// validate checks values against each other and their ranges.
func (l *loader) validate(c *Config) error {
	bad := func(key, problem string) error {
		return &Error{Key: key, Source: l.source[key], Problem: problem}
	}
	positive := map[string]time.Duration{
		"worker.ready_timeout": c.Worker.ReadyTimeout, "health.interval": c.Health.Interval,
		"health.timeout": c.Health.Timeout, "shutdown.timeout": c.Shutdown.Timeout,
	}
	for _, k := range keys { // in key order, so the first bad key is reported
		if d, ok := positive[k.name]; ok && d <= 0 {
			return bad(k.name, "must be > 0")
		}
	}
	switch {
	case c.Bind == "":
		return bad("bind", "must not be empty")
	case strings.ContainsAny(c.Bind, " /[]") || strings.Count(c.Bind, ":") == 1:
		return bad("bind", fmt.Sprintf("%q is not a host name or IP address (the port is a separate key)", c.Bind))
	case c.Port < 0 || c.Port > 65535:
		return bad("port", fmt.Sprintf("%d is out of range 0-65535", c.Port))
	case len(c.Worker.Command) == 0 || c.Worker.Command[0] == "":
		return bad("worker.command", "must name a program")
	case c.Worker.Readiness != "callback" && c.Worker.Readiness != "poll":
		return bad("worker.readiness", fmt.Sprintf("%q is not callback or poll", c.Worker.Readiness))
	case !strings.HasPrefix(c.Worker.HealthPath, "/"):
		return bad("worker.health_path", "must start with /")
	case c.Worker.PortRange[0] < 1 || c.Worker.PortRange[1] > 65535:
		return bad("worker.port_range", fmt.Sprintf("%v is out of range 1-65535", c.Worker.PortRange))
	case c.Worker.PortRange[0] > c.Worker.PortRange[1]:
		return bad("worker.port_range", fmt.Sprintf("min %d > max %d", c.Worker.PortRange[0], c.Worker.PortRange[1]))
	case c.Worker.Grace < 0:
		return bad("worker.grace", "must be >= 0")
	case c.Worker.LogMaxBytes <= 0:
		return bad("worker.log_max_bytes", "must be > 0")
	case c.Health.FailureThreshold < 1:
		return bad("health.failure_threshold", "must be >= 1")
	case c.Resources.NVMLMock != "" && !slices.Contains(resources.MockNames, c.Resources.NVMLMock):
		return bad("resources.nvml_mock", fmt.Sprintf("%q is not one of %s", c.Resources.NVMLMock, strings.Join(resources.MockNames, ", ")))
	case c.Events.Buffer < 1:
		return bad("events.buffer", "must be >= 1")
	case c.Shutdown.LeaveWorkers && c.StateDir == "":
		return bad("shutdown.leave_workers", "needs a state_dir, or no hive could re-adopt the workers")
	}
	p, err := restart.ParsePolicy(c.Restart.PolicyName)
	if err != nil || c.Restart.PolicyName == "" {
		return bad("restart.policy", fmt.Sprintf("%q is not always, on-failure or never", c.Restart.PolicyName))
	}
	c.Restart.Policy = p
	if err := c.Restart.Config.Validate(); err != nil {
		var ce *restart.ConfigError
		if errors.As(err, &ce) {
			return bad(ce.Key, ce.Problem)
		}
		return bad("restart", err.Error())
	}
	for _, u := range []struct{ key, val string }{{"provisioner.hf_endpoint", c.Provisioner.HFEndpoint}, {"queen.url", c.Queen.URL}} {
		if u.val == "" {
			continue
		}
		if parsed, err := url.Parse(u.val); err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return bad(u.key, fmt.Sprintf("%q is not an http(s) URL", u.val))
		}
	}
	for _, d := range c.Provisioner.LocalDirs {
		if !filepath.IsAbs(d) {
			return bad("provisioner.local_dirs", fmt.Sprintf("%q is not an absolute path", d))
		}
	}
	names := make(map[string]bool)
	for i, e := range c.Catalog {
		if names[e.Name] {
			return bad(fmt.Sprintf("catalog[%d].name", i), fmt.Sprintf("%q appears twice", e.Name))
		}
		names[e.Name] = true
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", fmt.Sprintf("%q is not debug, info, warn or error", c.Log.Level))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return bad("log.format", fmt.Sprintf("%q is not text or json", c.Log.Format))
	}
	return nil
}

// IsLoopback reports whether a bind address only accepts local connections.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func lookup(environ []string, name string) string {
	for i := len(environ) - 1; i >= 0; i-- { // the last one wins, as in os/exec
		if v, ok := strings.CutPrefix(environ[i], name+"="); ok {
			return v
		}
	}
	return ""
}

func expandHome(p, home string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	if home == "" {
		return "", fmt.Errorf("cannot expand ~ in %q: HOME is not set", p)
	}
	return filepath.Join(home, p[1:]), nil
}

// assign parses raw as kind into the pointer target.
func assign(kd kind, raw any, target any) error {
	switch t := target.(type) {
	case *string:
		s, ok := raw.(string)
		if !ok {
			return fmt.Errorf("want a string, got %s", describe(raw))
		}
		*t = s
	case *int:
		n, err := toInt(raw)
		if err != nil {
			return err
		}
		if n > math.MaxInt32 || n < math.MinInt32 {
			return fmt.Errorf("%d is out of range", n)
		}
		*t = int(n)
	case *bool:
		switch v := raw.(type) {
		case bool:
			*t = v
		case string:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			*t = b
		default:
			return fmt.Errorf("want true or false, got %s", describe(raw))
		}
	case *float64:
		f, err := toFloat(raw)
		if err != nil {
			return err
		}
		*t = f
	case *time.Duration:
		d, err := toDuration(raw)
		if err != nil {
			return err
		}
		*t = d
	case *int64: // every int64 key is a size
		n, err := ParseSize(raw)
		if err != nil {
			return err
		}
		*t = n
	case *[]string:
		l, err := toStrings(raw)
		if err != nil {
			return err
		}
		*t = l
	case *[2]int:
		r, err := toPortRange(raw)
		if err != nil {
			return err
		}
		*t = r
	case *[]CatalogEntry:
		c, err := toCatalog(raw)
		if err != nil {
			return err
		}
		*t = c
	default:
		panic(fmt.Sprintf("config: no parser for %T (kind %d)", target, kd))
	}
	return nil
}

func describe(v any) string {
	if v == nil {
		return "nothing"
	}
	return fmt.Sprintf("%T %v", v, v)
}

func toInt(raw any) (int64, error) {
	switch v := raw.(type) {
	case int:
		return int64(v), nil
	case int64:
		return v, nil
	case uint64:
		if v > math.MaxInt64 {
			return 0, fmt.Errorf("%d is out of range", v)
		}
		return int64(v), nil
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return 0, fmt.Errorf("want an integer, got %v", v)
		}
		return int64(v), nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("want an integer, got %q", v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("want an integer, got %s", describe(raw))
}

func toFloat(raw any) (float64, error) {
	switch v := raw.(type) {
	case float64:
		return v, nil
	case int, int64, uint64:
		n, err := toInt(v)
		return float64(n), err
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("want a number, got %q", v)
		}
		return f, nil
	}
	return 0, fmt.Errorf("want a number, got %s", describe(raw))
}

func toDuration(raw any) (time.Duration, error) {
	if s, ok := raw.(string); ok {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return 0, fmt.Errorf("want a duration such as \"10s\" or \"300ms\", got %q", s)
		}
		return d, nil
	}
	if n, err := toInt(raw); err == nil && n == 0 {
		return 0, nil // a bare 0 is unambiguous
	}
	return 0, fmt.Errorf("want a duration string such as \"10s\", got %s", describe(raw))
}

// sizeUnits are the units ParseSize accepts (case-insensitive).
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize reads a byte count: an integer, or a string of a number and a
// unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; "1.5GiB" allowed). Negative
// sizes are an error.
func ParseSize(raw any) (int64, error) {
	if s, ok := raw.(string); ok {
		s = strings.TrimSpace(s)
		i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != '-' && r != '+' })
		num, unit := s, ""
		if i >= 0 {
			num, unit = s[:i], strings.TrimSpace(s[i:])
		}
		mult, ok := sizeUnits[strings.ToLower(unit)]
		f, err := strconv.ParseFloat(num, 64)
		if !ok || err != nil || num == "" {
			return 0, fmt.Errorf("want a size such as 1048576, \"10MiB\" or \"1GB\", got %q", s)
		}
		if f < 0 {
			return 0, fmt.Errorf("size %q is negative", s)
		}
		v := f * mult
		if v >= math.MaxInt64 {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return int64(v), nil
	}
	n, err := toInt(raw)
	if err != nil {
		return 0, fmt.Errorf("want a size such as 1048576 or \"10MiB\": %w", err)
	}
	if n < 0 {
		return 0, fmt.Errorf("size %d is negative", n)
	}
	return n, nil
}

// fromEnvList decodes a list given as a string (environment): a JSON array,
// or comma-separated items.
func fromEnvList(s string) ([]any, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var l []any
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			return nil, fmt.Errorf("bad JSON array: %v", err)
		}
		return l, nil
	}
	if s == "" {
		return []any{}, nil
	}
	var l []any
	for _, item := range strings.Split(s, ",") {
		l = append(l, strings.TrimSpace(item))
	}
	return l, nil
}

func toList(raw any) ([]any, error) {
	switch v := raw.(type) {
	case []any:
		return v, nil
	case []string:
		l := make([]any, len(v))
		for i, s := range v {
			l[i] = s
		}
		return l, nil
	case []map[string]any:
		l := make([]any, len(v))
		for i, m := range v {
			l[i] = m
		}
		return l, nil
	case string:
		return fromEnvList(v)
	}
	return nil, fmt.Errorf("want a list, got %s", describe(raw))
}

func toStrings(raw any) ([]string, error) {
	l, err := toList(raw)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(l))
	for i, item := range l {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("item %d: want a string, got %s", i, describe(item))
		}
		out[i] = s
	}
	return out, nil
}

func toPortRange(raw any) ([2]int, error) {
	if s, ok := raw.(string); ok && !strings.HasPrefix(strings.TrimSpace(s), "[") && strings.Contains(s, "-") {
		raw = strings.Replace(s, "-", ",", 1) // "8081-9000"
	}
	l, err := toList(raw)
	if err != nil {
		return [2]int{}, err
	}
	if len(l) != 2 {
		return [2]int{}, fmt.Errorf("want [min, max], got %d items", len(l))
	}
	var r [2]int
	for i, item := range l {
		n, err := toInt(item)
		if err != nil {
			return [2]int{}, err
		}
		if n < 0 || n > 65535 {
			return [2]int{}, fmt.Errorf("port %d is out of range 1-65535", n)
		}
		r[i] = int(n)
	}
	return r, nil
}

func toCatalog(raw any) ([]CatalogEntry, error) {
	if s, ok := raw.(string); ok && strings.TrimSpace(s) != "" && !strings.HasPrefix(strings.TrimSpace(s), "[") {
		return nil, errors.New("from the environment, want a JSON array of objects")
	}
	l, err := toList(raw)
	if err != nil {
		return nil, err
	}
	out := make([]CatalogEntry, len(l))
	for i, item := range l {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("entry %d: want a table, got %s", i, describe(item))
		}
		e := &out[i]
		for f, v := range m {
			var target any
			switch f {
			case "name":
				target = &e.Name
			case "model_ref":
				target = &e.ModelRef
			case "description":
				target = &e.Description
			case "size_bytes":
				target = &e.SizeBytes
			case "vram_bytes":
				target = &e.VRAMBytes
			default:
				return nil, fmt.Errorf("entry %d: unknown key %q (want name, model_ref, description, size_bytes, vram_bytes)", i, f)
			}
			if err := assign(catalogFields[f], v, target); err != nil {
				return nil, fmt.Errorf("entry %d: %s: %w", i, f, err)
			}
		}
		if e.Name == "" || e.ModelRef == "" {
			return nil, fmt.Errorf("entry %d: name and model_ref are required", i)
		}
	}
	return out, nil
}

// showDefault writes a default as YAML would (for the README).
func showDefault(v any) string {
	switch d := v.(type) {
	case string:
		if d == "" {
			return `""`
		}
		return d
	case []string:
		return "[" + strings.Join(d, ", ") + "]"
	case []any:
		parts := make([]string, len(d))
		for i, x := range d {
			parts[i] = fmt.Sprint(x)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v)
}
