// Package resources owns what a worker runs on: the devices of this machine
// (CPU memory from the kernel, CUDA devices through NVML via go-nvml), their
// total and free memory, a reservation ledger so concurrent spawns never
// oversubscribe a device, device selection, and free disk space.
//
// What a new reservation may take on one device is
//
//	available = min(free, total - reserved) - ReserveBytes   (floored at 0)
//
// where free is what the driver or kernel reports now and reserved is what
// this hive's ledger holds on the device. The total-reserved term stops two
// spawns from both taking memory the driver still reports free because
// neither worker has loaded yet; the free term accounts for memory used by
// anything else. Memory other processes take while one of our workers is
// still loading is not seen until it shows in free.
//
// It imports no other rbee-hive module.
package resources

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
)

// Backends.
const (
	CPU  = "cpu"
	CUDA = "cuda"
)

// Errors callers decide on.
var (
	ErrBackendUnavailable = errors.New("backend unavailable")
	ErrUnknownBackend     = errors.New("unknown backend")
	ErrUnknownDevice      = errors.New("unknown device")
	ErrInsufficientMemory = errors.New("insufficient device memory")
)

// UnavailableError says why a backend cannot be used (no cgo, no driver,
// NVML Init failed). It matches ErrBackendUnavailable.
type UnavailableError struct {
	Backend string
	Reason  string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("backend %s unavailable: %s", e.Backend, e.Reason)
}

// Is reports whether target is ErrBackendUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrBackendUnavailable }

// InsufficientMemoryError is returned when no reservation fits. Device is -1
// when no device of the backend fits. It matches ErrInsufficientMemory.
type InsufficientMemoryError struct {
	Backend string
	// Device is the device asked for or, when the caller let the ledger
	// choose (AnyDevice), the one that came closest: the operator learns
	// where the most room is, not a placeholder.
	Device         int
	AnyDevice      bool
	RequiredBytes  uint64
	AvailableBytes uint64 // available on Device
}

func (e *InsufficientMemoryError) Error() string {
	if e.AnyDevice {
		return fmt.Sprintf("insufficient memory on every %s device: required %d bytes, the most available is %d bytes (device %d)",
			e.Backend, e.RequiredBytes, e.AvailableBytes, e.Device)
	}
	return fmt.Sprintf("insufficient memory on %s device %d: required %d bytes, available %d bytes",
		e.Backend, e.Device, e.RequiredBytes, e.AvailableBytes)
}

// Is reports whether target is ErrInsufficientMemory.
func (e *InsufficientMemoryError) Is(target error) bool { return target == ErrInsufficientMemory }

// Device is one device as read now.
type Device struct {
	Backend       string `json:"backend"`
	Index         int    `json:"index"`
	Name          string `json:"name"`
	UUID          string `json:"uuid,omitempty"`
	TotalBytes    uint64 `json:"total_bytes"`
	FreeBytes     uint64 `json:"free_bytes"`     // as the driver or kernel reports it
	ReservedBytes uint64 `json:"reserved_bytes"` // held by this hive's ledger
}

// Options configure a Manager.
type Options struct {
	// NVMLMock names a go-nvml mock server ("dgxa100", "dgxh100", "dgxh200",
	// "dgxb200") used instead of the real driver. "" means the real driver.
	NVMLMock string
	// DisableCUDA skips NVML entirely.
	DisableCUDA bool
	// ReserveBytes is kept free on every device for everything else.
	ReserveBytes uint64
	// MeminfoPath overrides /proc/meminfo (tests).
	MeminfoPath string
	// Logger receives warnings (devices skipped, memory reads failing).
	// nil means slog.Default().
	Logger *slog.Logger
}

var mockNames = []string{"dgxa100", "dgxb200", "dgxh100", "dgxh200"}

// MockNames lists the values Options.NVMLMock accepts (config validation).
// It is a copy: New validates against its own list.
var MockNames = append([]string(nil), mockNames...)

// gpuDevice is what NVML says about a device once, at open.
type gpuDevice struct {
	index int
	name  string
	uuid  string
}

// gpuSource reads CUDA devices. nvml.go implements it over go-nvml; builds
// without cgo have none. Callers serialise calls (Manager.mu) and never call
// it after close.
type gpuSource interface {
	devices() []gpuDevice
	memory(index int) (total, free uint64, err error)
	close() error
}

type deviceKey struct {
	backend string
	index   int
}

// Manager reads devices and keeps the reservation ledger. Safe for
// concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger

	// mu guards everything below, and serialises every read of device
	// memory with the ledger so a decision is made on one consistent view.
	mu       sync.Mutex
	cpuErr   *UnavailableError
	cuda     gpuSource // nil when cudaErr is set
	cudaErr  *UnavailableError
	gpus     []gpuDevice
	reserved map[deviceKey]uint64
	closed   bool
}

// New opens the backends. CUDA being unavailable is not an error: it is
// reported by Backend and Devices. NVML is never called after a failed Init.
// An unknown Options.NVMLMock is an error.
func New(opts Options) (*Manager, error) {
	if opts.NVMLMock != "" && !isMockName(opts.NVMLMock) {
		return nil, fmt.Errorf("resources: unknown nvml_mock %q (want one of %s)",
			opts.NVMLMock, strings.Join(mockNames, ", "))
	}
	if opts.DisableCUDA {
		return newManager(opts, nil, "disabled by configuration"), nil
	}
	src, reason := openCUDA(opts.NVMLMock, loggerOf(opts))
	return newManager(opts, src, reason), nil
}

func loggerOf(opts Options) *slog.Logger {
	if opts.Logger != nil {
		return opts.Logger
	}
	return slog.Default()
}

func isMockName(name string) bool {
	for _, n := range mockNames {
		if n == name {
			return true
		}
	}
	return false
}

// newManager builds a Manager over an opened gpu source, or with cuda
// unavailable for reason when src is nil. Tests inject sources here.
func newManager(opts Options, src gpuSource, reason string) *Manager {
	m := &Manager{
		opts:     opts,
		log:      loggerOf(opts),
		reserved: make(map[deviceKey]uint64),
	}
	if opts.MeminfoPath == "" {
		m.opts.MeminfoPath = "/proc/meminfo"
	}
	if _, _, err := readMeminfo(m.opts.MeminfoPath); err != nil {
		m.cpuErr = &UnavailableError{Backend: CPU, Reason: err.Error()}
		m.log.Warn("cpu backend unavailable", "reason", err)
	}
	if src == nil {
		m.cudaErr = &UnavailableError{Backend: CUDA, Reason: reason}
		m.log.Info("cuda backend unavailable", "reason", reason)
	} else {
		m.cuda = src
		m.gpus = src.devices()
	}
	return m
}

// Close shuts NVML down. CUDA is unavailable afterwards; Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.cuda == nil {
		return nil
	}
	err := m.cuda.close()
	m.cuda, m.gpus = nil, nil
	m.cudaErr = &UnavailableError{Backend: CUDA, Reason: "resource manager closed"}
	if err != nil {
		return fmt.Errorf("resources: close: %w", err)
	}
	return nil
}

// Backend returns nil when the backend can be used, an *UnavailableError
// when it cannot, or ErrUnknownBackend.
func (m *Manager) Backend(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.backendLocked(name)
}

func (m *Manager) backendLocked(name string) error {
	switch name {
	case CPU:
		if m.cpuErr != nil {
			return m.cpuErr
		}
		return nil
	case CUDA:
		if m.cudaErr != nil {
			return m.cudaErr
		}
		return nil
	default:
		return fmt.Errorf("%w %q", ErrUnknownBackend, name)
	}
}

// Devices reads every device of every available backend now. A device whose
// memory cannot be read is listed with FreeBytes 0 (and a warning logged).
func (m *Manager) Devices() []Device {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Device
	if m.cpuErr == nil {
		d := Device{Backend: CPU, Index: 0, Name: "cpu", ReservedBytes: m.reserved[deviceKey{CPU, 0}]}
		total, free, err := readMeminfo(m.opts.MeminfoPath)
		if err != nil {
			m.log.Warn("read cpu memory", "err", err)
		}
		d.TotalBytes, d.FreeBytes = total, free
		out = append(out, d)
	}
	for _, g := range m.gpus {
		d := Device{Backend: CUDA, Index: g.index, Name: g.name, UUID: g.uuid,
			ReservedBytes: m.reserved[deviceKey{CUDA, g.index}]}
		total, free, err := m.cuda.memory(g.index)
		if err != nil {
			m.log.Warn("read cuda memory", "device", g.index, "err", err)
		}
		d.TotalBytes, d.FreeBytes = total, free
		out = append(out, d)
	}
	return out
}

// Available returns what a new reservation on one device may take:
// min(free, total-reserved) - ReserveBytes, floored at 0 (see the package
// comment).
func (m *Manager) Available(backend string, index int) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.deviceLocked(backend, index); err != nil {
		return 0, err
	}
	return m.availableLocked(backend, index)
}

// SelectDevice returns the device of backend with the most available memory
// that fits required bytes.
func (m *Manager) SelectDevice(backend string, required uint64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.selectLocked(backend, -1, required)
}

// Reserve holds required bytes on one device, or on the best-fitting device
// when index < 0, atomically with the check. owner names the holder (a
// worker id) for diagnostics.
func (m *Manager) Reserve(backend string, index int, required uint64, owner string) (*Reservation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if index < 0 {
		index = -1
	}
	idx, err := m.selectLocked(backend, index, required)
	if err != nil {
		return nil, err
	}
	key := deviceKey{backend, idx}
	m.reserved[key] += required
	m.log.Debug("reserved device memory", "backend", backend, "device", idx,
		"bytes", required, "owner", owner, "reserved_total", m.reserved[key])
	return &Reservation{m: m, backend: backend, index: idx, bytes: required, owner: owner}, nil
}

// deviceLocked checks that backend is usable and has device index.
func (m *Manager) deviceLocked(backend string, index int) error {
	if err := m.backendLocked(backend); err != nil {
		return err
	}
	for _, i := range m.indicesLocked(backend) {
		if i == index {
			return nil
		}
	}
	return fmt.Errorf("%w: %s device %d", ErrUnknownDevice, backend, index)
}

func (m *Manager) indicesLocked(backend string) []int {
	if backend == CPU {
		return []int{0}
	}
	out := make([]int, len(m.gpus))
	for i, g := range m.gpus {
		out[i] = g.index
	}
	return out
}

// selectLocked picks the device with the most available memory that fits
// required among index (when >= 0) or all devices of backend. Ties go to the
// lowest index. A device whose memory cannot be read is not a candidate.
func (m *Manager) selectLocked(backend string, index int, required uint64) (int, error) {
	var candidates []int
	if index >= 0 {
		if err := m.deviceLocked(backend, index); err != nil {
			return -1, err
		}
		candidates = []int{index}
	} else {
		if err := m.backendLocked(backend); err != nil {
			return -1, err
		}
		candidates = m.indicesLocked(backend)
		sort.Ints(candidates)
	}
	// best is the device with the most available memory; it is chosen
	// when that fits, and named in the error when nothing does.
	best, bestAvail := -1, uint64(0)
	var readErr error
	for _, i := range candidates {
		avail, err := m.availableLocked(backend, i)
		if err != nil {
			readErr = err
			m.log.Warn("read device memory", "backend", backend, "device", i, "err", err)
			continue
		}
		if best < 0 || avail > bestAvail {
			best, bestAvail = i, avail
		}
	}
	if best < 0 {
		if readErr == nil { // no candidates: backendLocked makes this unreachable
			readErr = fmt.Errorf("%w: no %s device", ErrUnknownDevice, backend)
		}
		return -1, readErr
	}
	if bestAvail >= required {
		return best, nil
	}
	return -1, &InsufficientMemoryError{Backend: backend, Device: best, AnyDevice: index < 0,
		RequiredBytes: required, AvailableBytes: bestAvail}
}

func (m *Manager) availableLocked(backend string, index int) (uint64, error) {
	var total, free uint64
	var err error
	switch backend {
	case CPU:
		total, free, err = readMeminfo(m.opts.MeminfoPath)
	case CUDA:
		total, free, err = m.cuda.memory(index)
	}
	if err != nil {
		return 0, err
	}
	byLedger := subFloor(total, m.reserved[deviceKey{backend, index}])
	return subFloor(min(free, byLedger), m.opts.ReserveBytes), nil
}

func subFloor(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// Reservation is a hold on device memory. Release frees it exactly once.
type Reservation struct {
	m       *Manager
	backend string
	index   int
	bytes   uint64
	owner   string
	once    sync.Once
}

// Backend returns the reserved device's backend.
func (r *Reservation) Backend() string { return r.backend }

// Device returns the reserved device's index.
func (r *Reservation) Device() int { return r.index }

// Bytes returns the reserved amount.
func (r *Reservation) Bytes() uint64 { return r.bytes }

// Owner returns the holder named at Reserve.
func (r *Reservation) Owner() string { return r.owner }

// Release returns the memory to the ledger. Later calls do nothing.
func (r *Reservation) Release() {
	r.once.Do(func() {
		m := r.m
		m.mu.Lock()
		defer m.mu.Unlock()
		key := deviceKey{r.backend, r.index}
		m.reserved[key] = subFloor(m.reserved[key], r.bytes)
		if m.reserved[key] == 0 {
			delete(m.reserved, key)
		}
		m.log.Debug("released device memory", "backend", r.backend, "device", r.index,
			"bytes", r.bytes, "owner", r.owner)
	})
}
