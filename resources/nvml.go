//go:build cgo

package resources

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

var mockServers = map[string]func() *server.Server{
	"dgxa100": dgxa100.New,
	"dgxb200": dgxb200.New,
	"dgxh100": dgxh100.New,
	"dgxh200": dgxh200.New,
}

// openCUDA opens the real driver, or the named go-nvml mock server. It
// returns the reason when CUDA cannot be used.
func openCUDA(mockName string, log *slog.Logger) (gpuSource, string) {
	if mockName == "" {
		return openNVML(nvml.New(), log)
	}
	newServer, ok := mockServers[mockName]
	if !ok { // New validated the name against mockNames; this is a bug guard.
		return nil, fmt.Sprintf("unknown nvml mock %q", mockName)
	}
	srv := newServer()
	idleMockDevices(srv)
	return openNVML(srv, log)
}

// idleMockDevices makes the mock's devices report all memory free: the mock
// servers start with Free 0, which would make every device look full.
func idleMockDevices(srv *server.Server) {
	for _, d := range srv.Devices {
		if dev, ok := d.(*server.Device); ok && dev.MemoryInfo.Free == 0 && dev.MemoryInfo.Used == 0 {
			dev.MemoryInfo.Free = dev.MemoryInfo.Total
		}
	}
}

// nvmlSource reads device memory through an initialised nvml.Interface.
type nvmlSource struct {
	lib     nvml.Interface
	handles map[int]nvml.Device
	devs    []gpuDevice
}

// openNVML initialises lib and enumerates its devices. After a failed Init
// it makes no further call into lib: with the real library that may load
// nothing and any call would crash the process. Devices that cannot be
// queried are skipped with a warning; none left means CUDA is unavailable.
func openNVML(lib nvml.Interface, log *slog.Logger) (gpuSource, string) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Sprintf("NVML init failed: %s", retString(ret))
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		shutdownNVML(lib, log)
		return nil, fmt.Sprintf("NVML device count: %s", retString(ret))
	}
	s := &nvmlSource{lib: lib, handles: make(map[int]nvml.Device, n)}
	for i := range n {
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			log.Warn("skipping cuda device", "device", i, "err", retString(ret))
			continue
		}
		if _, ret := h.GetMemoryInfo(); ret != nvml.SUCCESS {
			log.Warn("skipping cuda device: memory unreadable", "device", i, "err", retString(ret))
			continue
		}
		name, ret := h.GetName()
		if ret != nvml.SUCCESS {
			name = "unknown"
		}
		uuid, ret := h.GetUUID()
		if ret != nvml.SUCCESS {
			uuid = ""
		}
		s.handles[i] = h
		s.devs = append(s.devs, gpuDevice{index: i, name: name, uuid: uuid})
	}
	if len(s.devs) == 0 {
		shutdownNVML(lib, log)
		return nil, fmt.Sprintf("NVML found no usable devices (%d reported)", n)
	}
	return s, ""
}

func shutdownNVML(lib nvml.Interface, log *slog.Logger) {
	if ret := lib.Shutdown(); ret != nvml.SUCCESS {
		log.Warn("NVML shutdown", "err", retString(ret))
	}
}

// retString names an NVML return code. Return.Error only calls into the
// library when it is loaded; nvmlErrorString needs no Init.
func retString(ret nvml.Return) string {
	return fmt.Sprintf("%s (code %d)", ret.Error(), int32(ret))
}

func (s *nvmlSource) devices() []gpuDevice { return s.devs }

func (s *nvmlSource) memory(index int) (total, free uint64, err error) {
	h, ok := s.handles[index]
	if !ok {
		return 0, 0, fmt.Errorf("%w: cuda device %d", ErrUnknownDevice, index)
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return 0, 0, fmt.Errorf("cuda device %d memory: %w", index, nvmlError(ret))
	}
	return mem.Total, mem.Free, nil
}

func (s *nvmlSource) close() error {
	if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML shutdown: %w", nvmlError(ret))
	}
	return nil
}

func nvmlError(ret nvml.Return) error { return errors.New(retString(ret)) }
