package provisioner

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	good := map[string]Ref{
		"hf:org/repo":                  {Kind: KindHF, Repo: "org/repo"},
		"hf:org/repo/model.gguf":       {Kind: KindHF, Repo: "org/repo", Path: "model.gguf"},
		"hf:org/repo/sub/dir/w.bin@v1": {Kind: KindHF, Repo: "org/repo", Path: "sub/dir/w.bin", Revision: "v1"},
		"hf:org/repo@refs/pr/1":        {Kind: KindHF, Repo: "org/repo", Revision: "refs/pr/1"},
		"hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf": {Kind: KindHF, Repo: "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", Path: "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"},
		"file:/models/llama.gguf": {Kind: KindFile, File: "/models/llama.gguf"},
		"tinyllama":               {Kind: KindCatalog, Name: "tinyllama"},
		"llama-3.1_8b":            {Kind: KindCatalog, Name: "llama-3.1_8b"},
	}
	for in, want := range good {
		got, err := ParseRef(in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("ParseRef(%q) = %+v, want %+v", in, got, want)
		}
		if got.String() != in {
			t.Errorf("ParseRef(%q).String() = %q", in, got.String())
		}
	}
	bad := map[string]string{
		"":                         "empty",
		strings.Repeat("a", 513):   "too long",
		"hf:org/re po":             "invalid character",
		"hf:org/répo":              "invalid character",
		"hf:org/repo\x00":          "control character",
		"hf:org/repo\n":            "control character",
		"hf:org/repo/../x":         "traversal",
		"file:/models/../etc/pass": "traversal",
		"hf:org/repo@..":           "traversal",
		"file:models/x":            "not absolute",
		"s3:bucket/x":              "unknown scheme",
		"hf:org":                   "missing repo (want hf:org/repo)",
		"hf:org/":                  "missing repo (want hf:org/repo)",
		"hf:org/repo@":             "empty revision",
		"hf:org/repo//x":           "empty segment",
		"hf:org/repo/./x":          "dot segment",
		"hf:org/.repo":             "invalid repo name",
		"a/b":                      "invalid catalog name",
	}
	for in, rule := range bad {
		_, err := ParseRef(in)
		var re *RefError
		if !errors.As(err, &re) || !errors.Is(err, ErrInvalidRef) {
			t.Errorf("ParseRef(%q) = %v, want a RefError", in, err)
			continue
		}
		if re.Rule != rule {
			t.Errorf("ParseRef(%q) broke %q, want %q", in, re.Rule, rule)
		}
	}
	if _, err := ParseRef(strings.Repeat("a", 512)); err != nil {
		t.Errorf("512 bytes: %v", err)
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"hf:org/repo", "hf:a/b/c/d.bin@main", "file:/x/y", "name", "hf:a/b@refs/pr/1", "hf:a/../b", "file:/", "hf:a/b//c", "x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(s) > MaxRefLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		for i := 0; i < len(s); i++ {
			if !allowedByte(s[i]) {
				t.Fatalf("accepted byte %q", s[i])
			}
		}
		for _, seg := range strings.Split(r.Path+"/"+r.File+"/"+r.Revision+"/"+r.Repo, "/") {
			if seg == ".." {
				t.Fatalf("accepted traversal in %q", s)
			}
		}
		if r.String() != s {
			t.Fatalf("String() = %q, want %q", r.String(), s)
		}
		r2, err := ParseRef(r.String())
		if err != nil || r2 != r {
			t.Fatalf("round trip of %q: %+v, %v", s, r2, err)
		}
	})
}
