package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

const namespace = "rbee_hive"

// UnmatchedRoute labels requests that matched no route, so a scanner probing
// random paths cannot create one series per path.
const UnmatchedRoute = "unmatched"

// Metrics holds the hive's collectors on a private registry. Every method is
// safe on a nil *Metrics and then does nothing.
type Metrics struct {
	reg            *prometheus.Registry
	handler        http.Handler
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	restarts       *prometheus.CounterVec
	healthFailures prometheus.Counter
	ready          prometheus.Histogram
	eventsDropped  prometheus.Counter
}

// New registers every collector on a new private registry. reg, res and prov
// are read at scrape time; any of them may be nil, which leaves its metrics
// out.
func New(reg *registry.Registry, res *resources.Manager, prov *provisioner.Provisioner) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "HTTP requests served, by method, route template and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "HTTP request latency, by method and route template.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "worker_restarts_total",
			Help: "Worker restarts, by the kind of exit that caused them.",
		}, []string{"reason"}),
		healthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "health_check_failures_total",
			Help: "Failed worker health probes.",
		}),
		ready: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "worker_ready_seconds",
			Help:    "Time from spawn (or restart) to ready.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_dropped_total",
			Help: "Event stream subscribers dropped for falling behind.",
		}),
	}
	m.reg.MustRegister(
		m.requests, m.duration, m.restarts, m.healthFailures, m.ready, m.eventsDropped,
		newStateCollector(reg, res, prov),
		collectors.NewGoCollector(),
		newProcessCollector("/proc"),
	)
	m.handler = newHandler(m.reg)
	return m
}

// Registry returns the private registry (nil for a nil *Metrics).
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the Prometheus text exposition of the private registry. For
// a nil *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

// newHandler is built once: promhttp.HandlerFor allocates a counter vector
// and its negotiation tables on every call.
func newHandler(reg *prometheus.Registry) http.Handler {
	return gzipFast(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector failing (say, NVML) must not hide every other metric.
		ErrorHandling: promhttp.ContinueOnError,
		// gzipFast compresses instead, at a faster level (see
		// gzipLevel): client_golang's default level 6 was a quarter of a
		// scrape's CPU with 1,000 workers.
		DisableCompression: true,
	}))
}

// knownMethods bounds the method label: clients may send any token.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}

// ObserveRequest records one served request. route is the route template
// ("/v1/models/provision/:id"), never the raw path; "" means no route
// matched and is labelled UnmatchedRoute.
func (m *Metrics) ObserveRequest(method, route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	if !knownMethods[method] {
		method = "OTHER"
	}
	if route == "" {
		route = UnmatchedRoute
	}
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(method, route).Observe(d.Seconds())
}

// WorkerRestarted counts a restart; reason is the exit kind that caused it.
func (m *Metrics) WorkerRestarted(reason string) {
	if m == nil {
		return
	}
	m.restarts.WithLabelValues(reason).Inc()
}

// HealthCheckFailed counts one failed health probe.
func (m *Metrics) HealthCheckFailed() {
	if m == nil {
		return
	}
	m.healthFailures.Inc()
}

// WorkerReady records the time from spawn (or restart) to ready.
func (m *Metrics) WorkerReady(d time.Duration) {
	if m == nil {
		return
	}
	m.ready.Observe(d.Seconds())
}

// EventSubscriberDropped counts an event stream subscriber dropped for being
// too slow.
func (m *Metrics) EventSubscriberDropped() {
	if m == nil {
		return
	}
	m.eventsDropped.Inc()
}

// stateCollector reads the registry, the devices and the provisioner at
// scrape time, so the figures are never a second copy that can drift.
type stateCollector struct {
	reg  *registry.Registry
	res  *resources.Manager
	prov *provisioner.Provisioner

	workers, byState, vramUsed, vramTotal, provBytes, provActive, cacheBytes *prometheus.Desc
}

func newStateCollector(reg *registry.Registry, res *resources.Manager, prov *provisioner.Provisioner) *stateCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &stateCollector{
		reg: reg, res: res, prov: prov,
		workers:    desc("workers_total", "Workers in the registry."),
		byState:    desc("workers_by_state", "Workers in each state (every state listed).", "state"),
		vramUsed:   desc("vram_used_bytes", "Device memory in use (total - free as the driver or kernel reports it), by device \"<backend>:<index>\".", "device"),
		vramTotal:  desc("vram_total_bytes", "Device memory, by device \"<backend>:<index>\".", "device"),
		provBytes:  desc("provision_bytes_total", "Bytes downloaded from the model hub."),
		provActive: desc("provisions_active", "Provisions in flight."),
		cacheBytes: desc("cache_bytes", "Bytes held by the model cache."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.workers, c.byState, c.vramUsed, c.vramTotal, c.provBytes, c.provActive, c.cacheBytes} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.reg != nil {
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(c.reg.Len()))
		for state, n := range c.reg.Counts() {
			ch <- prometheus.MustNewConstMetric(c.byState, prometheus.GaugeValue, float64(n), string(state))
		}
	}
	if c.res != nil {
		for _, d := range c.res.Devices() {
			label := d.Backend + ":" + strconv.Itoa(d.Index)
			used := d.TotalBytes - min(d.FreeBytes, d.TotalBytes)
			ch <- prometheus.MustNewConstMetric(c.vramUsed, prometheus.GaugeValue, float64(used), label)
			ch <- prometheus.MustNewConstMetric(c.vramTotal, prometheus.GaugeValue, float64(d.TotalBytes), label)
		}
	}
	if c.prov != nil {
		ch <- prometheus.MustNewConstMetric(c.provBytes, prometheus.CounterValue, float64(c.prov.Stats().BytesDownloaded))
		ch <- prometheus.MustNewConstMetric(c.provActive, prometheus.GaugeValue, float64(len(c.prov.Active())))
		used, _ := c.prov.Usage()
		ch <- prometheus.MustNewConstMetric(c.cacheBytes, prometheus.GaugeValue, float64(used))
	}
}
