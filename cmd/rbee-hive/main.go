// Command rbee-hive is the per-machine pool manager of the rbee system: a
// daemon that provisions models, spawns and supervises inference workers, and
// serves its HTTP API. All control is HTTP; there are no subcommands.
//
// main only loads the configuration (internal/config) and hands it to serve
// (hive.go), which wires the modules together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/rbee-hive/rbee-hive/cmd/rbee-hive/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit status: 0 after a clean
// shutdown, 1 when serving failed, 2 for a configuration error.
func run(args, environ []string, stdout, stderr io.Writer) int {
	cfg, opts, err := config.Load(args, environ)
	switch {
	case errors.Is(err, config.ErrHelp):
		fmt.Fprint(stdout, config.Usage())
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "rbee-hive: %v\n", err)
		return 2
	case opts.Version:
		fmt.Fprintln(stdout, "rbee-hive", version)
		return 0
	}
	log := newLogger(cfg, stderr)
	if err := serve(context.Background(), cfg, log); err != nil {
		log.Error("rbee-hive failed", "err", err)
		return 1
	}
	return 0
}

// newLogger builds the process logger from log.level and log.format.
func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated by config
	o := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}
