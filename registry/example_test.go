package registry_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/rbee-hive/rbee-hive/registry"
)

func Example() {
	dir, _ := os.MkdirTemp("", "registry-example")
	defer os.RemoveAll(dir)

	reg, err := registry.Open(registry.Options{StateDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	events := reg.Watch(16)

	w, _ := reg.Register(registry.Worker{ID: "worker-1", ModelRef: "hf:org/repo", Backend: "cpu"})
	fmt.Println("registered in state", w.State)

	w, _ = reg.Update("worker-1", func(w *registry.Worker) error {
		w.State = registry.StateIdle
		w.URL = "http://127.0.0.1:8081"
		return nil
	})
	fmt.Println("now", w.State, "at", w.URL)

	_, err = reg.Update("worker-1", func(w *registry.Worker) error {
		w.State = registry.StateLoading // idle -> loading is not in the diagram
		return nil
	})
	fmt.Println(err, errors.Is(err, registry.ErrInvalidTransition))

	reg.Close()
	for ev := range events.C() {
		fmt.Println(ev.Seq, ev.Kind, ev.From, "->", ev.Worker.State)
	}

	// A restarted hive finds its workers again.
	again, _ := registry.Open(registry.Options{StateDir: dir})
	defer again.Close()
	fmt.Println(again.Len(), "worker(s) after reopening, idle:", again.Counts()[registry.StateIdle])

	// Output:
	// registered in state loading
	// now idle at http://127.0.0.1:8081
	// worker worker-1: invalid state transition idle -> loading true
	// 1 registered  -> loading
	// 2 updated loading -> idle
	// 1 worker(s) after reopening, idle: 1
}
