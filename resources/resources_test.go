package resources

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const kib = 1024

// quietLogger keeps expected warnings out of the test output.
var quietLogger = slog.New(slog.DiscardHandler)

// writeMeminfo writes a /proc/meminfo-format file and returns its path.
func writeMeminfo(t *testing.T, totalKiB, availKiB uint64) string {
	t.Helper()
	return writeFile(t, fmt.Sprintf("MemTotal:       %d kB\nMemFree:         1234 kB\nMemAvailable:   %d kB\nBuffers:          99 kB\n",
		totalKiB, availKiB))
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newCPUOnly(t *testing.T, opts Options) *Manager {
	t.Helper()
	opts.DisableCUDA = true
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	m, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestCPUDeviceFromMeminfo(t *testing.T) {
	m := newCPUOnly(t, Options{MeminfoPath: writeMeminfo(t, 16*kib*kib, 10*kib*kib)})
	if err := m.Backend(CPU); err != nil {
		t.Fatalf("Backend(cpu) = %v", err)
	}
	devs := m.Devices()
	if len(devs) != 1 {
		t.Fatalf("Devices = %+v, want one cpu device", devs)
	}
	want := Device{Backend: CPU, Index: 0, Name: "cpu", TotalBytes: 16 << 30, FreeBytes: 10 << 30}
	if devs[0] != want {
		t.Fatalf("Devices[0] = %+v, want %+v", devs[0], want)
	}
	avail, err := m.Available(CPU, 0)
	if err != nil || avail != 10<<30 {
		t.Fatalf("Available = %d, %v; want %d", avail, err, uint64(10<<30))
	}
}

func TestCPUFromRealProcMeminfo(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc/meminfo")
	}
	m := newCPUOnly(t, Options{})
	devs := m.Devices()
	if len(devs) != 1 || devs[0].TotalBytes == 0 || devs[0].FreeBytes == 0 || devs[0].FreeBytes > devs[0].TotalBytes {
		t.Fatalf("Devices = %+v", devs)
	}
}

func TestMalformedMeminfo(t *testing.T) {
	cases := map[string]string{
		"missing available": "MemTotal: 100 kB\nMemFree: 50 kB\n",
		"missing total":     "MemAvailable: 100 kB\n",
		"not a number":      "MemTotal: lots kB\nMemAvailable: 10 kB\n",
		"unknown unit":      "MemTotal: 100 MB\nMemAvailable: 10 kB\n",
		"extra fields":      "MemTotal: 100 kB extra\nMemAvailable: 10 kB\n",
		"empty":             "",
		"overflow":          "MemTotal: 18446744073709551615 kB\nMemAvailable: 10 kB\n",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, content)
			if _, _, err := readMeminfo(path); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("readMeminfo error = %v, want one naming %s", err, path)
			}
			m := newCPUOnly(t, Options{MeminfoPath: path})
			var ue *UnavailableError
			if err := m.Backend(CPU); !errors.As(err, &ue) || ue.Backend != CPU || !errors.Is(err, ErrBackendUnavailable) {
				t.Fatalf("Backend(cpu) = %v, want *UnavailableError", err)
			}
			if len(m.Devices()) != 0 {
				t.Fatalf("Devices = %+v, want none", m.Devices())
			}
			if _, err := m.Reserve(CPU, 0, 1, "w"); !errors.Is(err, ErrBackendUnavailable) {
				t.Fatalf("Reserve = %v, want ErrBackendUnavailable", err)
			}
		})
	}
}

func TestMeminfoBreaksAfterStart(t *testing.T) {
	path := writeMeminfo(t, 1000, 800)
	m := newCPUOnly(t, Options{MeminfoPath: path})
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Available(CPU, 0); err == nil {
		t.Fatal("Available succeeded on a malformed meminfo")
	}
	if _, err := m.Reserve(CPU, 0, 1, "w"); err == nil || errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("Reserve = %v, want the read error", err)
	}
	if _, err := m.SelectDevice(CPU, 1); err == nil || errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("SelectDevice = %v, want the read error", err)
	}
	if d := m.Devices(); len(d) != 1 || d[0].FreeBytes != 0 {
		t.Fatalf("Devices = %+v, want the cpu device with FreeBytes 0", d)
	}
}

func TestUnknownBackendAndDevice(t *testing.T) {
	m := newCPUOnly(t, Options{MeminfoPath: writeMeminfo(t, 1000, 800)})
	if err := m.Backend("rocm"); !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("Backend(rocm) = %v", err)
	}
	if _, err := m.Reserve("rocm", 0, 1, "w"); !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("Reserve(rocm) = %v", err)
	}
	if _, err := m.SelectDevice("rocm", 1); !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("SelectDevice(rocm) = %v", err)
	}
	if _, err := m.Available(CPU, 1); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("Available(cpu, 1) = %v", err)
	}
	if _, err := m.Reserve(CPU, 1, 1, "w"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("Reserve(cpu, 1) = %v", err)
	}
	var ue *UnavailableError
	if err := m.Backend(CUDA); !errors.As(err, &ue) || ue.Reason != "disabled by configuration" {
		t.Fatalf("Backend(cuda) with DisableCUDA = %v", err)
	}
}

func TestUnknownNVMLMock(t *testing.T) {
	m, err := New(Options{NVMLMock: "dgx-nope"})
	if err == nil {
		_ = m.Close()
		t.Fatal("New accepted an unknown nvml_mock")
	}
	if !strings.Contains(err.Error(), "dgx-nope") || !strings.Contains(err.Error(), "dgxh100") {
		t.Fatalf("error %q should name the bad value and the valid ones", err)
	}
}

func TestCPUReserveReleaseAndReserveBytes(t *testing.T) {
	// 1000 KiB total, 800 KiB available, 100 KiB kept back.
	m := newCPUOnly(t, Options{MeminfoPath: writeMeminfo(t, 1000, 800), ReserveBytes: 100 * kib})
	avail, _ := m.Available(CPU, 0)
	if avail != 700*kib {
		t.Fatalf("Available = %d, want %d", avail, 700*kib)
	}
	r, err := m.Reserve(CPU, -1, 500*kib, "worker-a")
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	if r.Backend() != CPU || r.Device() != 0 || r.Bytes() != 500*kib || r.Owner() != "worker-a" {
		t.Fatalf("reservation = %s/%d %d %s", r.Backend(), r.Device(), r.Bytes(), r.Owner())
	}
	// min(free 800, total-reserved 500) - 100 = 400.
	if avail, _ := m.Available(CPU, 0); avail != 400*kib {
		t.Fatalf("Available after reserve = %d, want %d", avail, 400*kib)
	}
	if d := m.Devices(); d[0].ReservedBytes != 500*kib {
		t.Fatalf("Devices ReservedBytes = %d", d[0].ReservedBytes)
	}
	_, err = m.Reserve(CPU, 0, 401*kib, "worker-b")
	var ime *InsufficientMemoryError
	if !errors.As(err, &ime) || !errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("Reserve over the limit = %v", err)
	}
	if *ime != (InsufficientMemoryError{Backend: CPU, Device: 0, RequiredBytes: 401 * kib, AvailableBytes: 400 * kib}) {
		t.Fatalf("error = %+v", *ime)
	}
	r.Release()
	r.Release() // harmless
	if avail, _ := m.Available(CPU, 0); avail != 700*kib {
		t.Fatalf("Available after release = %d, want %d", avail, 700*kib)
	}
	if d := m.Devices(); d[0].ReservedBytes != 0 {
		t.Fatalf("ReservedBytes after release = %d", d[0].ReservedBytes)
	}
}

// Concurrent reservations on the CPU device never exceed what is available.
func TestCPUConcurrentReserve(t *testing.T) {
	m := newCPUOnly(t, Options{MeminfoPath: writeMeminfo(t, 1000, 1000)})
	const n = 50
	var wg sync.WaitGroup
	res := make(chan *Reservation, n)
	for i := range n {
		wg.Go(func() {
			r, err := m.Reserve(CPU, 0, 64*kib, fmt.Sprint("w", i))
			if err == nil {
				res <- r
			} else if !errors.Is(err, ErrInsufficientMemory) {
				t.Errorf("Reserve: %v", err)
			}
		})
	}
	wg.Wait()
	close(res)
	var got int
	for r := range res {
		got++
		r.Release()
	}
	if got != 1000/64 {
		t.Fatalf("%d reservations of 64 KiB fit in 1000 KiB, want %d", got, 1000/64)
	}
}

func TestDiskFree(t *testing.T) {
	free, err := DiskFree(t.TempDir())
	if err != nil || free == 0 {
		t.Fatalf("DiskFree(tempdir) = %d, %v", free, err)
	}
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	if _, err := DiskFree(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("DiskFree(missing) = %v, want an error naming the path", err)
	}
}
