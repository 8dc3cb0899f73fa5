// Package resources owns what a worker runs on: the devices of this machine
// (CPU memory from the kernel, CUDA devices through NVML via go-nvml), their
// total and free memory, a reservation ledger so concurrent spawns never
// oversubscribe a device, device selection, and free disk space.
//
// It imports no other rbee-hive module.
package resources

import (
	"errors"
	"fmt"
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
	Backend        string
	Device         int
	RequiredBytes  uint64
	AvailableBytes uint64 // the largest available on any candidate device
}

func (e *InsufficientMemoryError) Error() string {
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
}

// Manager reads devices and keeps the reservation ledger. Safe for
// concurrent use.
type Manager struct{}

// New opens the backends. CUDA being unavailable is not an error: it is
// reported by Backend and Devices. NVML is never called after a failed Init.
func New(opts Options) (*Manager, error) { panic("resources: not implemented") }

// Close shuts NVML down.
func (m *Manager) Close() error { panic("resources: not implemented") }

// Backend returns nil when the backend can be used, an *UnavailableError
// when it cannot, or ErrUnknownBackend.
func (m *Manager) Backend(name string) error { panic("resources: not implemented") }

// Devices reads every device of every available backend now.
func (m *Manager) Devices() []Device { panic("resources: not implemented") }

// Available returns what a new reservation on one device may take:
// min(free, total-reserved) - ReserveBytes - reserved-but-not-yet-loaded
// is left to the implementation, but it never lets the ledger exceed what the
// device really has.
func (m *Manager) Available(backend string, index int) (uint64, error) {
	panic("resources: not implemented")
}

// SelectDevice returns the device of backend with the most available memory
// that fits required bytes.
func (m *Manager) SelectDevice(backend string, required uint64) (int, error) {
	panic("resources: not implemented")
}

// Reserve holds required bytes on one device, or on the best-fitting device
// when index < 0, atomically with the check. owner names the holder (a
// worker id) for diagnostics.
func (m *Manager) Reserve(backend string, index int, required uint64, owner string) (*Reservation, error) {
	panic("resources: not implemented")
}

// Reservation is a hold on device memory. Release frees it exactly once.
type Reservation struct{}

// Backend returns the reserved device's backend.
func (r *Reservation) Backend() string { panic("resources: not implemented") }

// Device returns the reserved device's index.
func (r *Reservation) Device() int { panic("resources: not implemented") }

// Bytes returns the reserved amount.
func (r *Reservation) Bytes() uint64 { panic("resources: not implemented") }

// Release returns the memory to the ledger. Later calls do nothing.
func (r *Reservation) Release() { panic("resources: not implemented") }

// DiskFree returns the bytes available to an unprivileged writer on the
// filesystem holding path.
func DiskFree(path string) (uint64, error) { panic("resources: not implemented") }
