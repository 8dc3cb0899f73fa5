package layers_test

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rbee-hive/rbee-hive/tools/layers"
)

const prefix = layers.ModulePrefix

// write creates root/rel with content, making directories as needed.
func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// goMod renders a go.mod that requires (directly) and replaces the siblings.
func goMod(dir string, siblings ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "module %s%s\n\ngo 1.26\n", prefix, dir)
	up := strings.Repeat("../", strings.Count(dir, "/")+1)
	for _, s := range siblings {
		fmt.Fprintf(&b, "\nrequire %s%s v0.1.0\n", prefix, s)
		fmt.Fprintf(&b, "replace %s%s => %s%s\n", prefix, s, up, s)
	}
	return b.String()
}

// cleanWorkspace writes a workspace of every module of the real table, each
// importing (and requiring) every sibling it may import and nothing else.
func cleanWorkspace(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	work := "go 1.26\n\nuse (\n"
	for _, r := range layers.DefaultTable {
		work += "\t./" + r.Dir + "\n"
		allowed := r.MayImport
		if r.Anything {
			allowed = []string{"registry", "monitor", "httpserver"}
		}
		write(t, root, r.Dir+"/go.mod", goMod(r.Dir, allowed...))
		src := "package " + strings.ReplaceAll(path.Base(r.Dir), "-", "") + "\n\nimport (\n\t\"fmt\"\n"
		for _, a := range allowed {
			src += fmt.Sprintf("\t_ %q\n", prefix+a)
		}
		// A module's own packages are always fine.
		src += fmt.Sprintf("\t_ %q\n)\n\nvar _ = fmt.Sprint\n", prefix+r.Dir+"/internal/x")
		write(t, root, r.Dir+"/"+path.Base(r.Dir)+".go", src)
		write(t, root, r.Dir+"/internal/x/x.go", "package x\n")
	}
	write(t, root, "go.work", work+")\n")
	return root
}

func check(t *testing.T, root string) []string {
	t.Helper()
	rep, err := layers.Check(root, layers.DefaultTable)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	var out []string
	for _, v := range rep.Violations {
		out = append(out, v.String())
	}
	return out
}

func TestCleanWorkspacePasses(t *testing.T) {
	root := cleanWorkspace(t)
	rep, err := layers.Check(root, layers.DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Violations) != 0 {
		t.Fatalf("clean workspace has violations:\n%s", strings.Join(check(t, root), "\n"))
	}
	if rep.Modules != len(layers.DefaultTable) || rep.Files != 2*len(layers.DefaultTable) {
		t.Errorf("checked %d modules, %d files; want %d, %d", rep.Modules, rep.Files,
			len(layers.DefaultTable), 2*len(layers.DefaultTable))
	}
}

// Each planted violation must be reported exactly, with file and line.
func TestPlantedViolationsAreCaught(t *testing.T) {
	tests := []struct {
		name  string
		plant func(t *testing.T, root string)
		want  []string
	}{
		{
			name: "regular file",
			plant: func(t *testing.T, root string) {
				write(t, root, "registry/bad.go", "package registry\n\nimport (\n\t\"os\"\n\t_ \""+prefix+"monitor\"\n)\n\nvar _ = os.Args\n")
			},
			want: []string{"registry/bad.go:5: module registry may not import " + prefix + "monitor (layer table)"},
		},
		{
			name: "sub-package of a forbidden module",
			plant: func(t *testing.T, root string) {
				write(t, root, "restart/policy/p.go", "package policy\n\nimport _ \""+prefix+"registry/store\"\n")
			},
			want: []string{"restart/policy/p.go:3: module restart may not import " + prefix + "registry/store (layer table)"},
		},
		{
			name: "test file",
			plant: func(t *testing.T, root string) {
				write(t, root, "resources/resources_test.go", "package resources\n\nimport _ \""+prefix+"provisioner\"\n")
			},
			want: []string{"resources/resources_test.go:3: module resources may not import " + prefix + "provisioner (layer table)"},
		},
		{
			name: "external test package",
			plant: func(t *testing.T, root string) {
				write(t, root, "provisioner/ext_test.go", "package provisioner_test\n\nimport (\n\t\"testing\"\n\n\t\""+prefix+"provisioner\"\n\t\""+prefix+"registry\"\n)\n")
			},
			want: []string{"provisioner/ext_test.go:7: module provisioner may not import " + prefix + "registry (layer table)"},
		},
		{
			name: "go:build ignore",
			plant: func(t *testing.T, root string) {
				write(t, root, "restart/gen.go", "//go:build ignore\n\npackage main\n\nimport _ \""+prefix+"monitor\"\n")
			},
			want: []string{"restart/gen.go:5: module restart may not import " + prefix + "monitor (layer table)"},
		},
		{
			name: "build tag",
			plant: func(t *testing.T, root string) {
				write(t, root, "metrics/gpu_linux.go", "//go:build linux && nvml_never_set\n// +build linux,nvml_never_set\n\npackage metrics\n\nimport _ \""+prefix+"monitor\"\n")
			},
			want: []string{"metrics/gpu_linux.go:6: module metrics may not import " + prefix + "monitor (layer table)"},
		},
		{
			name: "cgo file",
			plant: func(t *testing.T, root string) {
				write(t, root, "resources/nvml_cgo.go", "//go:build cgo\n\npackage resources\n\n/*\n#include <stdlib.h>\n*/\nimport \"C\"\n\nimport _ \""+prefix+"registry\"\n")
			},
			want: []string{"resources/nvml_cgo.go:10: module resources may not import " + prefix + "registry (layer table)"},
		},
		{
			name: "library imports tools and cmd",
			plant: func(t *testing.T, root string) {
				write(t, root, "httpserver/dev.go", "package httpserver\n\nimport (\n\t_ \""+prefix+"tools/layers\"\n\t_ \""+prefix+"cmd/rbee-hive\"\n\t_ \""+prefix+"cmd/other\"\n)\n")
			},
			want: []string{
				"httpserver/dev.go:4: module httpserver may not import " + prefix + "tools/layers (layer table)",
				"httpserver/dev.go:5: module httpserver may not import " + prefix + "cmd/rbee-hive (layer table)",
				"httpserver/dev.go:6: module httpserver may not import " + prefix + "cmd/other (layer table)",
			},
		},
		{
			name: "unknown internal module",
			plant: func(t *testing.T, root string) {
				write(t, root, "shutdown/x.go", "package shutdown\n\nimport _ \""+prefix+"scheduler\"\n")
			},
			want: []string{"shutdown/x.go:3: module shutdown may not import " + prefix + "scheduler (layer table)"},
		},
		{
			name: "forbidden direct require",
			plant: func(t *testing.T, root string) {
				write(t, root, "registry/go.mod", goMod("registry", "monitor"))
			},
			want: []string{"registry/go.mod:5: module registry may not require " + prefix + "monitor (layer table)"},
		},
		{
			name: "require of a non-module",
			plant: func(t *testing.T, root string) {
				write(t, root, "restart/go.mod", goMod("restart", "scheduler"))
			},
			want: []string{
				"restart/go.mod:5: module restart may not require " + prefix + "scheduler: not a module of the layer table",
			},
		},
		{
			name: "forbidden indirect require",
			plant: func(t *testing.T, root string) {
				write(t, root, "provisioner/go.mod", goMod("provisioner", "resources")+
					"\nrequire "+prefix+"registry v0.1.0 // indirect\nreplace "+prefix+"registry => ../registry\n")
			},
			want: []string{"provisioner/go.mod:8: module provisioner may not require " + prefix + "registry, even indirectly (layer table)"},
		},
		{
			name: "missing replace",
			plant: func(t *testing.T, root string) {
				write(t, root, "monitor/go.mod", goMod("monitor", "registry", "resources", "provisioner")+
					"\nrequire "+prefix+"restart v0.1.0\n")
			},
			want: []string{"monitor/go.mod:14: module monitor requires " + prefix + "restart without a replace => ../restart"},
		},
		{
			name: "wrong replace",
			plant: func(t *testing.T, root string) {
				write(t, root, "provisioner/go.mod", "module "+prefix+"provisioner\n\ngo 1.26\n\nrequire "+prefix+"resources v0.1.0\n\nreplace "+prefix+"resources => ../registry\n")
			},
			want: []string{"provisioner/go.mod:7: module provisioner replaces " + prefix + "resources with ../registry, want ../resources"},
		},
		{
			name: "wrong module path",
			plant: func(t *testing.T, root string) {
				write(t, root, "metrics/go.mod", strings.Replace(goMod("metrics", "registry", "resources", "provisioner"), prefix+"metrics", "example.com/metrics", 1))
			},
			want: []string{"metrics/go.mod:1: module path is example.com/metrics, want " + prefix + "metrics"},
		},
		{
			name: "go.work uses a module not in the table",
			plant: func(t *testing.T, root string) {
				write(t, root, "scheduler/go.mod", goMod("scheduler"))
				data, _ := os.ReadFile(filepath.Join(root, "go.work"))
				write(t, root, "go.work", strings.Replace(string(data), ")", "\t./scheduler\n)", 1))
			},
			want: []string{"go.work:15: go.work uses ./scheduler, which is not in the layer table"},
		},
		{
			name: "table module missing from disk and go.work",
			plant: func(t *testing.T, root string) {
				if err := os.RemoveAll(filepath.Join(root, "shutdown")); err != nil {
					t.Fatal(err)
				}
				data, _ := os.ReadFile(filepath.Join(root, "go.work"))
				write(t, root, "go.work", strings.Replace(string(data), "\t./shutdown\n", "", 1))
			},
			want: []string{
				"go.work: module shutdown of the layer table is not in go.work's use list",
				"shutdown: module dir of the layer table does not exist (no shutdown/go.mod)",
			},
		},
		{
			name: "symlinked file",
			plant: func(t *testing.T, root string) {
				write(t, root, "elsewhere/bad.go", "package registry\n\nimport _ \""+prefix+"httpserver\"\n")
				if err := os.Symlink(filepath.Join(root, "elsewhere", "bad.go"), filepath.Join(root, "registry", "linked.go")); err != nil {
					t.Skipf("no symlinks here: %v", err)
				}
			},
			want: []string{"registry/linked.go:3: module registry may not import " + prefix + "httpserver (layer table)"},
		},
		{
			name: "unparsable file",
			plant: func(t *testing.T, root string) {
				write(t, root, "registry/broken.go", "package registry\n\nimport (\n\t\"os\"\n")
			},
			want: []string{"registry/broken.go: cannot parse imports: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := cleanWorkspace(t)
			tt.plant(t, root)
			got := check(t, root)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d violations, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("violation %d:\n got  %s\n want %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// Things the checker must leave alone.
func TestAllowedThingsPass(t *testing.T) {
	root := cleanWorkspace(t)
	// An indirect require inside the transitive closure (shutdown → monitor → restart).
	write(t, root, "shutdown/go.mod", goMod("shutdown", "registry", "monitor")+
		"\nrequire "+prefix+"restart v0.1.0 // indirect\nreplace "+prefix+"restart => ./../restart\n")
	// A sub-package of an allowed module, in a test file.
	write(t, root, "monitor/monitor_test.go", "package monitor\n\nimport _ \""+prefix+"registry/store\"\n")
	// testdata and nested modules are not this module's code.
	write(t, root, "registry/testdata/bad.go", "package bad\n\nimport _ \""+prefix+"monitor\"\n")
	write(t, root, "registry/example/go.mod", "module example.com/ex\n")
	write(t, root, "registry/example/main.go", "package main\n\nimport _ \""+prefix+"monitor\"\n")
	// The binary and tools may import anything, including each other.
	write(t, root, "tools/e2e/e2e_test.go", "package e2e_test\n\nimport _ \""+prefix+"cmd/rbee-hive\"\n")
	write(t, root, "cmd/rbee-hive/dev.go", "//go:build dev\n\npackage main\n\nimport _ \""+prefix+"tools/layers\"\n")
	// Non-internal imports are not the table's business.
	write(t, root, "restart/x.go", "package restart\n\nimport _ \"github.com/cenkalti/backoff/v4\"\nimport _ \"github.com/rbee-hive/other\"\n")
	if got := check(t, root); len(got) != 0 {
		t.Fatalf("violations in an allowed workspace:\n%s", strings.Join(got, "\n"))
	}
}

func TestWorkspaceWithoutGoWork(t *testing.T) {
	root := cleanWorkspace(t)
	if err := os.Remove(filepath.Join(root, "go.work")); err != nil {
		t.Fatal(err)
	}
	write(t, root, "monitor/bad.go", "package monitor\n\nimport _ \""+prefix+"shutdown\"\n")
	got := check(t, root)
	if want := []string{"monitor/bad.go:3: module monitor may not import " + prefix + "shutdown (layer table)"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestBadTableIsAnError(t *testing.T) {
	for _, tbl := range []layers.Table{
		{{Dir: "a", MayImport: []string{"b"}}},
		{{Dir: "a"}, {Dir: "a"}},
	} {
		if _, err := layers.Check(t.TempDir(), tbl); err == nil {
			t.Errorf("table %+v accepted", tbl)
		}
	}
}

// The table matches DESIGN.md's layers: nothing may import upward.
func TestDefaultTableIsLayered(t *testing.T) {
	layer := map[string]int{
		"registry": 0, "resources": 0, "provisioner": 1, "restart": 1,
		"monitor": 2, "metrics": 2, "shutdown": 2, "httpmiddleware": 3, "httpserver": 3,
	}
	for _, r := range layers.DefaultTable {
		if r.Anything {
			if r.Dir != "cmd/rbee-hive" && r.Dir != "tools" {
				t.Errorf("%s may import anything", r.Dir)
			}
			continue
		}
		for _, m := range r.MayImport {
			if layer[m] > layer[r.Dir] || (m == "monitor" && r.Dir != "shutdown" && r.Dir != "httpserver") {
				t.Errorf("%s (layer %d) may import %s (layer %d)", r.Dir, layer[r.Dir], m, layer[m])
			}
		}
	}
}

// The real repository follows its own table.
func TestRealRepository(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Skipf("not inside the rbee-hive checkout: %v", err)
	}
	rep, err := layers.Check(root, layers.DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range rep.Violations {
		t.Error(v)
	}
	if rep.Modules != len(layers.DefaultTable) || rep.Files == 0 {
		t.Errorf("checked %d modules and %d files", rep.Modules, rep.Files)
	}
}
