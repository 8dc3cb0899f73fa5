package monitor

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i <= to; i++ {
		fmt.Fprintf(f, "line %d\n", i)
	}
}

func TestLogCapRotatesOnceAndTailSpansBothFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	writeLines(t, path, 1, 100)
	capLog(path, 1<<20, slog.Default()) // under the cap: untouched
	if _, err := os.Stat(path + ".1"); !os.IsNotExist(err) {
		t.Fatal("rotated under the cap")
	}
	capLog(path, 100, slog.Default())
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("current log after rotation: %v, %v", fi, err)
	}
	writeLines(t, path, 101, 103) // appends continue in the emptied file
	got, err := tailLines(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	if want := "line 99\nline 100\nline 101\nline 102\nline 103\n"; string(got) != want {
		t.Fatalf("tail 5 = %q, want %q", got, want)
	}
	// A second rotation replaces .1: at most two files are kept.
	capLog(path, 10, slog.Default())
	all, _ := tailLines(path, 0)
	if string(all) != "line 101\nline 102\nline 103\n" {
		t.Fatalf("all after second rotation = %q", all)
	}
}

func TestTailFileLongLogAndMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	writeLines(t, path, 1, 20000) // larger than one read block
	got, n, err := tailFile(path, 3)
	if err != nil || n != 3 || string(got) != "line 19998\nline 19999\nline 20000\n" {
		t.Fatalf("tail 3 = %q (%d), %v", got, n, err)
	}
	if got, n, err := tailFile(path+".nope", 3); err != nil || n != 0 || got != nil {
		t.Fatalf("missing file: %q %d %v", got, n, err)
	}
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("partial")
	f.Close()
	got, _, _ = tailFile(path, 2)
	if string(got) != "line 20000\npartial" {
		t.Fatalf("tail with a partial last line = %q", got)
	}
	if all, _ := tailLines(path, 0); strings.Count(string(all), "\n") != 20000 {
		t.Fatal("tail 0 is not everything")
	}
}
