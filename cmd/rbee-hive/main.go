// Command rbee-hive is the per-machine pool manager of the rbee system: a
// daemon that provisions models, spawns and supervises inference workers, and
// serves its HTTP API. All control is HTTP; there are no subcommands.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/rbee-hive/rbee-hive/cmd/rbee-hive/internal/config"
)

var version = "0.1.0-dev"

func main() {
	cfg, opts, err := config.Load(os.Args[1:], os.Environ())
	switch {
	case opts.Help:
		fmt.Print(config.Usage())
		return
	case err != nil:
		fmt.Fprintf(os.Stderr, "rbee-hive: %v\n", err)
		os.Exit(2)
	case opts.Version:
		fmt.Println("rbee-hive", version)
		return
	}

	log := newLogger(cfg)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "alive", "version": version, "api_version": "v1"})
	})
	srv := &http.Server{Addr: net.JoinHostPort(cfg.Bind, strconv.Itoa(cfg.Port)), Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	log.Info("rbee-hive listening", "addr", srv.Addr, "version", version)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

// newLogger builds the process logger from log.level and log.format.
func newLogger(cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated by config
	o := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, o))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, o))
}
