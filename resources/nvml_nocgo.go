//go:build !cgo

package resources

import "log/slog"

// openCUDA: go-nvml needs cgo, so a build without it has no CUDA backend.
func openCUDA(string, *slog.Logger) (gpuSource, string) {
	return nil, "built without cgo (go-nvml needs cgo)"
}
