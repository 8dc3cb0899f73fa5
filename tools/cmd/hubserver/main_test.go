package main

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"123": 123, "1KiB": 1024, "64MiB": 64 << 20, "1GiB": 1 << 30, "2GB": 2e9, "5 B": 5} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1TiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
