//go:build !cgo

package resources

import (
	"errors"
	"strings"
	"testing"
)

func TestNoCgoCUDAUnavailable(t *testing.T) {
	for _, mock := range []string{"", "dgxh100"} {
		m, err := New(Options{NVMLMock: mock, MeminfoPath: writeMeminfo(t, 1000, 1000), Logger: quietLogger})
		if err != nil {
			t.Fatalf("New(%q): %v", mock, err)
		}
		var ue *UnavailableError
		if err := m.Backend(CUDA); !errors.As(err, &ue) || !strings.Contains(ue.Reason, "without cgo") {
			t.Fatalf("Backend(cuda) = %v, want unavailable: built without cgo", err)
		}
		if _, err := m.Reserve(CUDA, -1, 1, "w"); !errors.Is(err, ErrBackendUnavailable) {
			t.Fatalf("Reserve = %v", err)
		}
		if err := m.Backend(CPU); err != nil {
			t.Fatalf("Backend(cpu) = %v", err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Options{NVMLMock: "nope"}); err == nil {
		t.Fatal("unknown mock accepted without cgo")
	}
}
