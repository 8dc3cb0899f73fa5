//go:build cgo

package resources

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

const gib = 1 << 30

// usage controls what the mock devices report as used, as another process
// on the GPU would. The mock's own GetMemoryInfo reads an unguarded field,
// so tests swap in one that reads under a lock.
type usage struct {
	mu   sync.Mutex
	used map[int]uint64
}

func (u *usage) set(index int, used uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.used[index] = used
}

func controlMemory(srv *server.Server) *usage {
	u := &usage{used: map[int]uint64{}}
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		total := dev.MemoryInfo.Total
		dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			u.mu.Lock()
			defer u.mu.Unlock()
			used := min(u.used[i], total)
			return nvml.Memory{Total: total, Free: total - used, Used: used}, nvml.SUCCESS
		}
	}
	return u
}

// newWithNVML builds a Manager over lib, as New does for the real driver.
func newWithNVML(t *testing.T, opts Options, lib nvml.Interface) *Manager {
	t.Helper()
	if opts.MeminfoPath == "" {
		opts.MeminfoPath = writeMeminfo(t, 64*kib*kib, 32*kib*kib)
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	if srv, ok := lib.(*server.Server); ok {
		idleMockDevices(srv)
	}
	src, reason := openNVML(lib, loggerOf(opts))
	m := newManager(opts, src, reason)
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func cudaDevices(m *Manager) []Device {
	var out []Device
	for _, d := range m.Devices() {
		if d.Backend == CUDA {
			out = append(out, d)
		}
	}
	return out
}

func TestNVMLMockOption(t *testing.T) {
	for _, tc := range []struct {
		mock, name string
		total      uint64
	}{
		{"dgxh100", "NVIDIA H100 80GB HBM3", 80 << 30},
		{"dgxa100", "Mock NVIDIA A100-SXM4-40GB", 40 << 30},
	} {
		t.Run(tc.mock, func(t *testing.T) {
			m, err := New(Options{NVMLMock: tc.mock, MeminfoPath: writeMeminfo(t, 1000, 1000), Logger: quietLogger})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := m.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			if err := m.Backend(CUDA); err != nil {
				t.Fatalf("Backend(cuda) = %v", err)
			}
			devs := cudaDevices(m)
			if len(devs) != 8 {
				t.Fatalf("%d cuda devices, want 8", len(devs))
			}
			uuids := map[string]bool{}
			for i, d := range devs {
				if d.Index != i || d.Name != tc.name || d.TotalBytes != tc.total ||
					d.FreeBytes != d.TotalBytes || !strings.HasPrefix(d.UUID, "GPU-") {
					t.Errorf("device %d = %+v, want %s with %d bytes, all free", i, d, tc.name, tc.total)
				}
				uuids[d.UUID] = true
			}
			if len(uuids) != 8 {
				t.Errorf("UUIDs not distinct: %v", uuids)
			}
		})
	}
}

// Every name New accepts opens a mock.
func TestEveryMockNameOpens(t *testing.T) {
	for _, name := range MockNames {
		m, err := New(Options{NVMLMock: name, MeminfoPath: writeMeminfo(t, 1000, 1000), Logger: quietLogger})
		if err != nil {
			t.Fatalf("New(%s): %v", name, err)
		}
		if err := m.Backend(CUDA); err != nil || len(cudaDevices(m)) == 0 {
			t.Errorf("%s: Backend(cuda) = %v, %d devices", name, err, len(cudaDevices(m)))
		}
		_ = m.Close()
	}
}

func TestSelectDeviceMostAvailable(t *testing.T) {
	srv := dgxh100.New()
	u := controlMemory(srv)
	total := srv.Devices[0].(*server.Device).MemoryInfo.Total
	for i := range 8 {
		u.set(i, 60*gib) // every device mostly busy...
	}
	u.set(5, 10*gib) // ...but 5 has the most free
	u.set(2, 30*gib) // and 2 the second most
	m := newWithNVML(t, Options{}, srv)

	idx, err := m.SelectDevice(CUDA, 20*gib)
	if err != nil || idx != 5 {
		t.Fatalf("SelectDevice = %d, %v; want 5", idx, err)
	}
	// Reserving on 5 leaves it with less than 2: the next pick is 2.
	// Available(5) = min(free, total-reserved) = min(total-10, total-40).
	r, err := m.Reserve(CUDA, -1, 40*gib, "worker-a")
	if err != nil || r.Device() != 5 {
		t.Fatalf("Reserve(-1) = %v, %v; want device 5", r, err)
	}
	if got, _ := m.Available(CUDA, 5); got != total-40*gib {
		t.Fatalf("Available(5) = %d, want %d", got, total-40*gib)
	}
	idx, err = m.SelectDevice(CUDA, 20*gib)
	if err != nil || idx != 2 {
		t.Fatalf("SelectDevice after reserve = %d, %v; want 2", idx, err)
	}
	r.Release()
	if idx, _ := m.SelectDevice(CUDA, 20*gib); idx != 5 {
		t.Fatalf("SelectDevice after release = %d, want 5", idx)
	}
	// Ties go to the lowest index.
	for i := range 8 {
		u.set(i, 0)
	}
	if idx, _ := m.SelectDevice(CUDA, 1); idx != 0 {
		t.Fatalf("SelectDevice on idle devices = %d, want 0", idx)
	}
}

func TestExhaustionErrorCarriesNumbers(t *testing.T) {
	srv := dgxa100.New()
	u := controlMemory(srv)
	total := srv.Devices[0].(*server.Device).MemoryInfo.Total
	u.set(3, total-8*gib) // device 3: 8 GiB free
	m := newWithNVML(t, Options{ReserveBytes: 1 * gib}, srv)

	// Fill every device but 3 through the ledger.
	for i := range 8 {
		if i == 3 {
			continue
		}
		if _, err := m.Reserve(CUDA, i, total-1*gib, fmt.Sprint("filler-", i)); err != nil {
			t.Fatalf("fill device %d: %v", i, err)
		}
	}
	_, err := m.Reserve(CUDA, -1, 10*gib, "big")
	var ime *InsufficientMemoryError
	if !errors.As(err, &ime) || !errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("Reserve = %v, want *InsufficientMemoryError", err)
	}
	want := InsufficientMemoryError{Backend: CUDA, Device: 3, AnyDevice: true, RequiredBytes: 10 * gib, AvailableBytes: 7 * gib}
	if *ime != want {
		t.Fatalf("error = %+v, want %+v", *ime, want)
	}
	if msg := err.Error(); !strings.Contains(msg, "every cuda device") || !strings.Contains(msg, "(device 3)") {
		t.Fatalf("message %q does not say no device fits and which came closest", msg)
	}
	_, err = m.Reserve(CUDA, 3, 10*gib, "big")
	if !errors.As(err, &ime) || ime.Device != 3 || ime.AnyDevice || ime.AvailableBytes != 7*gib {
		t.Fatalf("Reserve on device 3 = %v", err)
	}
	if !strings.Contains(err.Error(), "device 3") || !strings.Contains(err.Error(), fmt.Sprint(10*gib)) {
		t.Fatalf("message %q lacks device or bytes", err)
	}
	if _, err := m.SelectDevice(CUDA, 10*gib); !errors.As(err, &ime) || ime.Device != 3 || !ime.AnyDevice {
		t.Fatalf("SelectDevice = %v", err)
	}
	if r, err := m.Reserve(CUDA, -1, 7*gib, "fits"); err != nil || r.Device() != 3 {
		t.Fatalf("Reserve(7 GiB) = %v, %v; want device 3", r, err)
	}
	if _, err := m.Reserve(CUDA, 8, 1, "w"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("Reserve on device 8 = %v", err)
	}
}

// 50 goroutines race to reserve on one device: the ledger never exceeds it.
func TestConcurrentReserveOneDevice(t *testing.T) {
	srv := dgxh100.New()
	controlMemory(srv)
	total := srv.Devices[0].(*server.Device).MemoryInfo.Total
	m := newWithNVML(t, Options{}, srv)

	const n = 50
	const each = 7 * gib
	var (
		wg      sync.WaitGroup
		held    atomic.Uint64
		maxHeld atomic.Uint64
		mu      sync.Mutex
		got     []*Reservation
		start   = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start
			r, err := m.Reserve(CUDA, 4, each, fmt.Sprint("worker-", i))
			if err != nil {
				var ime *InsufficientMemoryError
				if !errors.As(err, &ime) || ime.Device != 4 || ime.RequiredBytes != each || ime.AvailableBytes >= each {
					t.Errorf("Reserve: %v", err)
				}
				return
			}
			h := held.Add(each)
			for {
				old := maxHeld.Load()
				if h <= old || maxHeld.CompareAndSwap(old, h) {
					break
				}
			}
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if want := int(total / each); len(got) != want {
		t.Fatalf("%d reservations succeeded, want %d", len(got), want)
	}
	if maxHeld.Load() > total {
		t.Fatalf("held %d bytes on a %d-byte device", maxHeld.Load(), total)
	}
	if d := cudaDevices(m)[4]; d.ReservedBytes != uint64(len(got))*each {
		t.Fatalf("ReservedBytes = %d, want %d", d.ReservedBytes, uint64(len(got))*each)
	}
	// Release concurrently, twice each: memory comes back exactly once.
	for _, r := range got {
		wg.Go(r.Release)
		wg.Go(r.Release)
	}
	wg.Wait()
	if avail, _ := m.Available(CUDA, 4); avail != total {
		t.Fatalf("Available after release = %d, want %d", avail, total)
	}
}

// Memory used by something else on the GPU limits what can be reserved.
func TestFreeMemoryLimitsReservation(t *testing.T) {
	srv := dgxh100.New()
	u := controlMemory(srv)
	total := srv.Devices[0].(*server.Device).MemoryInfo.Total
	m := newWithNVML(t, Options{}, srv)
	u.set(0, total-5*gib)
	if _, err := m.Reserve(CUDA, 0, 6*gib, "w"); !errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("Reserve beyond free = %v", err)
	}
	r, err := m.Reserve(CUDA, 0, 5*gib, "w")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	u.set(0, 0)
	// Free went up, but the ledger still holds 5 GiB.
	if avail, _ := m.Available(CUDA, 0); avail != total-5*gib {
		t.Fatalf("Available = %d, want %d", avail, total-5*gib)
	}
}

func TestFailedInitMakesNoFurtherCall(t *testing.T) {
	// Every function but Init is nil: calling one panics, failing the test.
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }}
	m := newWithNVML(t, Options{}, lib)
	checkCUDAUnavailable(t, m, "ERROR_DRIVER_NOT_LOADED")
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := len(lib.InitCalls()); n != 1 {
		t.Fatalf("Init called %d times", n)
	}
}

// The real go-nvml library with no libnvidia-ml to load: Init fails for
// real, and any further call would crash the test binary.
func TestRealNVMLWithoutLibrary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	m := newWithNVML(t, Options{}, nvml.New(nvml.WithLibraryPath(missing)))
	checkCUDAUnavailable(t, m, "ERROR_LIBRARY_NOT_FOUND")
}

// New with the real driver: on a machine without one (CI), cuda is
// unavailable with the reason; with one, its devices are listed.
func TestNewRealDriver(t *testing.T) {
	m, err := New(Options{MeminfoPath: writeMeminfo(t, 1000, 1000), Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	if err := m.Backend(CUDA); err != nil {
		if !errors.Is(err, ErrBackendUnavailable) {
			t.Fatalf("Backend(cuda) = %v", err)
		}
		t.Logf("no usable driver here: %v", err)
		checkCUDAUnavailable(t, m, "NVML")
		return
	}
	devs := cudaDevices(m)
	if len(devs) == 0 {
		t.Fatal("cuda available with no devices")
	}
	for _, d := range devs {
		t.Logf("real device: %+v", d)
		if d.TotalBytes == 0 || d.FreeBytes > d.TotalBytes {
			t.Errorf("implausible device %+v", d)
		}
	}
}

func checkCUDAUnavailable(t *testing.T, m *Manager, reason string) {
	t.Helper()
	var ue *UnavailableError
	if err := m.Backend(CUDA); !errors.As(err, &ue) || ue.Backend != CUDA || !strings.Contains(ue.Reason, reason) {
		t.Fatalf("Backend(cuda) = %v, want unavailable mentioning %q", err, reason)
	}
	if d := cudaDevices(m); len(d) != 0 {
		t.Fatalf("cuda devices listed: %+v", d)
	}
	if _, err := m.Reserve(CUDA, -1, 1, "w"); !errors.Is(err, ErrBackendUnavailable) {
		t.Fatalf("Reserve = %v", err)
	}
	if _, err := m.Reserve(CUDA, 0, 1, "w"); !errors.Is(err, ErrBackendUnavailable) {
		t.Fatalf("Reserve(0) = %v", err)
	}
	if _, err := m.SelectDevice(CUDA, 1); !errors.Is(err, ErrBackendUnavailable) {
		t.Fatalf("SelectDevice = %v", err)
	}
	if _, err := m.Available(CUDA, 0); !errors.Is(err, ErrBackendUnavailable) {
		t.Fatalf("Available = %v", err)
	}
	if err := m.Backend(CPU); err != nil {
		t.Fatalf("cpu should still work: %v", err)
	}
}

func TestDeviceCountFailure(t *testing.T) {
	srv := dgxh100.New()
	srv.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	m := newWithNVML(t, Options{}, srv)
	checkCUDAUnavailable(t, m, "device count")
	if n := len(srv.ShutdownCalls()); n != 1 {
		t.Fatalf("Shutdown called %d times after a successful Init, want 1", n)
	}
}

func TestNoDevices(t *testing.T) {
	m := newWithNVML(t, Options{}, dgxh100.NewWithGPUs())
	checkCUDAUnavailable(t, m, "no usable devices")
}

// A device NVML cannot open (lost, unreadable) is skipped; the rest work,
// keeping their NVML indices.
func TestBrokenDevicesSkipped(t *testing.T) {
	srv := dgxh100.New()
	controlMemory(srv)
	getHandle := srv.DeviceGetHandleByIndexFunc
	srv.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i == 1 {
			return nil, nvml.ERROR_GPU_IS_LOST
		}
		return getHandle(i)
	}
	srv.Devices[6].(*server.Device).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		return nvml.Memory{}, nvml.ERROR_UNKNOWN
	}
	m := newWithNVML(t, Options{}, srv)
	var idx []int
	for _, d := range cudaDevices(m) {
		idx = append(idx, d.Index)
	}
	if fmt.Sprint(idx) != "[0 2 3 4 5 7]" {
		t.Fatalf("device indices = %v, want [0 2 3 4 5 7]", idx)
	}
	if _, err := m.Reserve(CUDA, 1, 1, "w"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("Reserve on the lost device = %v", err)
	}
	if r, err := m.Reserve(CUDA, 7, 1, "w"); err != nil || r.Device() != 7 {
		t.Fatalf("Reserve on device 7 = %v, %v", r, err)
	}
}

// A device whose memory read starts failing after start: listed with 0 free,
// never selected, a reservation on it reports the read error.
func TestMemoryReadFailsAtRuntime(t *testing.T) {
	srv := dgxh100.New()
	u := controlMemory(srv)
	var broken atomic.Bool
	dev := srv.Devices[0].(*server.Device)
	working := dev.GetMemoryInfoFunc
	dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		if broken.Load() {
			return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST
		}
		return working()
	}
	m := newWithNVML(t, Options{}, srv)
	for i := 1; i < 8; i++ {
		u.set(i, 40*gib)
	}
	broken.Store(true)
	if d := cudaDevices(m)[0]; d.Index != 0 || d.FreeBytes != 0 {
		t.Fatalf("broken device listed as %+v", d)
	}
	if _, err := m.Available(CUDA, 0); err == nil || !strings.Contains(err.Error(), "ERROR_GPU_IS_LOST") {
		t.Fatalf("Available = %v", err)
	}
	if _, err := m.Reserve(CUDA, 0, 1, "w"); err == nil || errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("Reserve on broken device = %v, want the read error", err)
	}
	if idx, err := m.SelectDevice(CUDA, 1); err != nil || idx != 1 {
		t.Fatalf("SelectDevice = %d, %v; want 1 (0 is broken)", idx, err)
	}
}

func TestCloseStopsNVML(t *testing.T) {
	srv := dgxh100.New()
	m := newWithNVML(t, Options{}, srv)
	r, err := m.Reserve(CUDA, -1, gib, "w")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := len(srv.ShutdownCalls()); n != 1 {
		t.Fatalf("Shutdown called %d times, want 1", n)
	}
	reads := len(srv.Devices[0].(*server.Device).GetMemoryInfoCalls())
	checkCUDAUnavailable(t, m, "closed")
	r.Release() // after Close: harmless
	if n := len(srv.Devices[0].(*server.Device).GetMemoryInfoCalls()); n != reads {
		t.Fatalf("NVML read memory %d times after Close", n-reads)
	}
}

func TestCloseReportsShutdownFailure(t *testing.T) {
	srv := dgxh100.New()
	srv.ShutdownFunc = func() nvml.Return { return nvml.ERROR_UNKNOWN }
	m := newWithNVML(t, Options{}, srv)
	if err := m.Close(); err == nil || !strings.Contains(err.Error(), "ERROR_UNKNOWN") {
		t.Fatalf("Close = %v", err)
	}
}

// The package builds, vets and works without cgo: cuda unavailable, never a
// crash (nvml_nocgo_test.go runs in that build).
func TestWithoutCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package again")
	}
	for _, args := range [][]string{
		{"vet", "."},
		{"test", "-count=1", "-run", "^TestNoCgo", "."},
	} {
		cmd := exec.CommandContext(t.Context(), "go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("CGO_ENABLED=0 go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("CGO_ENABLED=0 go %s:\n%s", strings.Join(args, " "), out)
	}
}

func BenchmarkReserveRelease(b *testing.B) {
	srv := dgxh100.New()
	idleMockDevices(srv)
	src, reason := openNVML(srv, quietLogger)
	if src == nil {
		b.Fatal(reason)
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "meminfo")
	if err := os.WriteFile(path, []byte("MemTotal: 1000 kB\nMemAvailable: 1000 kB\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	m := newManager(Options{MeminfoPath: path, Logger: quietLogger}, src, "")
	defer m.Close()
	for _, tc := range []struct {
		name  string
		index int
	}{{"one-device", 0}, {"select", -1}} {
		b.Run(tc.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, err := m.Reserve(CUDA, tc.index, gib, "bench")
					if err != nil {
						b.Error(err)
						return
					}
					r.Release()
				}
			})
		})
	}
}
