package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRealRepositoryIsClean(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Skipf("not inside the rbee-hive checkout: %v", err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{root}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "layercheck: ok: 11 modules,") || strings.Count(stdout.String(), "\n") != 1 {
		t.Errorf("summary %q", stdout.String())
	}
}

func TestViolationsExitOne(t *testing.T) {
	root := t.TempDir()
	// A workspace with only a registry that imports monitor: every other
	// module of the table is missing, and the import is forbidden.
	if err := os.MkdirAll(filepath.Join(root, "registry"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"registry/go.mod": "module github.com/rbee-hive/rbee-hive/registry\n\ngo 1.26\n",
		"registry/reg.go": "package registry\n\nimport _ \"github.com/rbee-hive/rbee-hive/monitor\"\n",
		"go.work":         "go 1.26\n\nuse ./registry\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{root}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	out := stderr.String()
	for _, want := range []string{
		"registry/reg.go:3: module registry may not import github.com/rbee-hive/rbee-hive/monitor (layer table)\n",
		"monitor: module dir of the layer table does not exist",
		"go.work: module tools of the layer table is not in go.work's use list",
		"violation(s) of the layer table",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want empty", stdout.String())
	}
}

func TestCannotCheckExitsTwo(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "go.work"), 0o755); err != nil { // unreadable as a file
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{root}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "go.work") {
		t.Errorf("exit %d, stderr %q; want 2 naming go.work", code, stderr.String())
	}
	if code := run([]string{"a", "b"}, &stdout, &stderr); code != 2 {
		t.Errorf("two args: exit %d, want 2", code)
	}
}
