package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rbee-hive/rbee-hive/cmd/rbee-hive/internal/config"
	"github.com/rbee-hive/rbee-hive/httpserver"
	"github.com/rbee-hive/rbee-hive/httpserver/events"
	"github.com/rbee-hive/rbee-hive/metrics"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/shutdown"
)

// termTimeout is DESIGN.md's fixed wait between SIGTERM and SIGKILL.
const termTimeout = 5 * time.Second

// httpCloseTimeout bounds closing the HTTP server once the workers are gone.
const httpCloseTimeout = 5 * time.Second

// serve builds the hive from cfg, serves until a shutdown request or signal
// has been drained, and tears everything down in reverse order.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) (err error) {
	var logDir string
	if cfg.StateDir != "" {
		logDir = filepath.Join(cfg.StateDir, "logs")
		if err := os.MkdirAll(logDir, 0o700); err != nil {
			return fmt.Errorf("state_dir: %w", err)
		}
		unlock, err := lockStateDir(cfg.StateDir)
		if err != nil {
			return err
		}
		defer unlock()
	}

	res, err := resources.New(resources.Options{
		NVMLMock: cfg.Resources.NVMLMock, ReserveBytes: uint64(cfg.Resources.ReserveBytes), Logger: log,
	})
	if err != nil {
		return err
	}
	defer closeLogged(log, "resources", res.Close)

	reg, err := registry.Open(registry.Options{StateDir: cfg.StateDir, Logger: log})
	if err != nil {
		return err
	}
	defer closeLogged(log, "registry", reg.Close)

	// The hub comes first: the provisioner's Notify must exist at New. met
	// is set before the hub runs, so OnDrop always sees it.
	var met *metrics.Metrics
	hub := events.New(events.Config{
		Buffer: cfg.Events.Buffer, Registry: reg, Logger: log,
		OnDrop: func() { met.EventSubscriberDropped() },
	})

	// The provisioner asks the monitor what is in use; the monitor needs
	// the provisioner first.
	var monRef atomic.Pointer[monitor.Monitor]
	prov, err := provisioner.New(provisioner.Config{
		CacheDir:      cfg.Provisioner.CacheDir,
		Endpoint:      cfg.Provisioner.HFEndpoint,
		Token:         cfg.Provisioner.HFToken,
		LocalDirs:     cfg.Provisioner.LocalDirs,
		MaxCacheBytes: cfg.Provisioner.MaxCacheBytes,
		Catalog:       catalog(cfg.Catalog),
		InUse: func(ref string) bool {
			m := monRef.Load()
			return m != nil && m.InUse(ref)
		},
		Notify: hub.PublishProvisioner,
		Logger: log,
	})
	if err != nil {
		return err
	}
	defer closeLogged(log, "provisioner", prov.Close)
	hub.SetProvisioner(prov)
	met = metrics.New(reg, res, prov)

	// Listen before the monitor exists: with port 0 the worker callback URL
	// needs the port the kernel chose.
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Bind, strconv.Itoa(cfg.Port)))
	if err != nil {
		return err
	}
	defer ln.Close() // a no-op once the HTTP server closed it

	mon, err := monitor.New(monitor.Config{
		Command:          cfg.Worker.Command,
		Readiness:        cfg.Worker.Readiness,
		HealthPath:       cfg.Worker.HealthPath,
		PortMin:          cfg.Worker.PortRange[0],
		PortMax:          cfg.Worker.PortRange[1],
		ReadyTimeout:     cfg.Worker.ReadyTimeout,
		Grace:            cfg.Worker.Grace,
		TermTimeout:      termTimeout,
		LogMaxBytes:      cfg.Worker.LogMaxBytes,
		LogDir:           logDir,
		HealthInterval:   cfg.Health.Interval,
		HealthTimeout:    cfg.Health.Timeout,
		FailureThreshold: cfg.Health.FailureThreshold,
		DefaultPolicy:    cfg.Restart.Policy,
		Restart:          cfg.Restart.Config,
		HiveURL:          hiveURL(ln.Addr()),
		Persistent:       cfg.StateDir != "",
		Observer:         met,
		Logger:           log,
	}, reg, res, prov)
	if err != nil {
		return err
	}
	defer closeLogged(log, "monitor", mon.Close)
	monRef.Store(mon)

	// Drain order: announce, cancel downloads (partials kept), then stop
	// (or leave) the workers; the API keeps answering throughout. Made
	// before re-adoption, which may take a while, so a signal meanwhile is
	// drained once the hive is up rather than killing it.
	coord := shutdown.New(shutdown.Config{
		Timeout: cfg.Shutdown.Timeout, LeaveWorkers: cfg.Shutdown.LeaveWorkers, Logger: log,
	}, mon, hub.PublishShutdown, func() { closeLogged(log, "provisioner", prov.Close) })
	if err := mon.Start(ctx); err != nil {
		return fmt.Errorf("re-adopting workers: %w", err)
	}

	audit, err := openAudit(cfg.StateDir)
	if err != nil {
		return err
	}
	if audit != nil {
		defer closeLogged(log, "audit log", audit.Close)
	}
	api, err := httpserver.New(httpserver.Config{
		Registry: reg, Resources: res, Provisioner: prov, Monitor: mon, Metrics: met,
		Lifecycle: coord, Events: hub, Token: cfg.Token, AuditLog: writerOrNil(audit),
		Logger: log, Version: version, StartedAt: time.Now(),
	})
	if err != nil {
		return err
	}
	hs := api.HTTPServer(ln.Addr().String())

	// The hub (and the queen pusher) outlive the drain, so the shutdown
	// events still reach subscribers; they stop before the HTTP server
	// closes, which ends the event streams.
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stopHub()
	bg.Go(func() {
		if err := hub.Run(hubCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("event hub stopped", "err", err)
		}
	})
	if cfg.Queen.URL != "" {
		pusher := events.NewPusher(events.PushConfig{URL: cfg.Queen.URL, Token: cfg.Queen.Token, Logger: log}, hub)
		// Not hubCtx: the pusher ends when the hub stops, after sending what
		// the hub emitted last (bounded by its FlushTimeout), so the queen
		// hears of the shutdown and the last workers' removal.
		bg.Go(func() {
			if err := pusher.Run(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("queen pusher stopped", "err", err)
			}
		})
	}

	serveErr := make(chan error, 1)
	bg.Go(func() {
		err := hs.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			coord.RequestShutdown("http server failed: " + err.Error())
		}
		serveErr <- err
	})
	log.Info("rbee-hive listening", "addr", ln.Addr().String(), "version", version,
		"state_dir", cfg.StateDir, "auth", cfg.Token != "", "config_file", cfg.File)

	drainErr := coord.Run(ctx)
	if drainErr != nil {
		log.Error("shutdown drain", "err", drainErr)
	}
	stopHub()
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpCloseTimeout)
	defer cancel()
	if err := hs.Shutdown(closeCtx); err != nil {
		log.Warn("closing HTTP connections", "err", err)
		_ = hs.Close()
	}
	if err := <-serveErr; err != nil {
		return fmt.Errorf("http server: %w", err)
	}
	if drainErr != nil && !errors.Is(drainErr, context.Canceled) {
		return drainErr
	}
	log.Info("rbee-hive stopped", "reason", coord.Reason())
	return nil
}

// hiveURL is the base URL workers on this machine call back: the bound
// address, or loopback when bound to every address.
func hiveURL(addr net.Addr) string {
	tcp := addr.(*net.TCPAddr)
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

// lockStateDir holds an exclusive lock on state_dir/hive.lock for the life
// of the process: two hives on one state dir would both re-adopt, restart
// and persist the same workers. The descriptor is close-on-exec, so workers
// (which may outlive the hive with shutdown.leave_workers) never hold it.
func lockStateDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "hive.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("state_dir %s is in use by another rbee-hive (pid %s)", dir, strings.TrimSpace(string(owner)))
		}
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	// The pid is only for the message above; the lock is what counts.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}

// openAudit opens state_dir/audit.log for appending (0600); no state_dir,
// no audit file.
func openAudit(stateDir string) (*os.File, error) {
	if stateDir == "" {
		return nil, nil
	}
	f, err := os.OpenFile(filepath.Join(stateDir, "audit.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return f, nil
}

// writerOrNil avoids handing httpserver a typed nil *os.File.
func writerOrNil(f *os.File) io.Writer {
	if f == nil {
		return nil
	}
	return f
}

func catalog(entries []config.CatalogEntry) []provisioner.CatalogEntry {
	out := make([]provisioner.CatalogEntry, len(entries))
	for i, e := range entries {
		out[i] = provisioner.CatalogEntry{
			Name: e.Name, ModelRef: e.ModelRef, Description: e.Description,
			SizeBytes: e.SizeBytes, VRAMBytes: e.VRAMBytes,
		}
	}
	return out
}

func closeLogged(log *slog.Logger, what string, closeFn func() error) {
	if err := closeFn(); err != nil {
		log.Warn("closing "+what, "err", err)
	}
}
