// Package layers owns the layer table of DESIGN.md and the checker that
// enforces it: which module of the workspace may import which sibling, in Go
// files and in go.mod requires.
//
// The checker parses every .go file's imports itself instead of asking the go
// tool, so build constraints hide nothing: test files, external test
// packages, cgo files and files behind a build tag (even //go:build ignore)
// are all checked.
package layers

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/modfile"
)

// ModulePrefix starts the path of every module of the workspace; a module's
// path is ModulePrefix + its directory.
const ModulePrefix = "github.com/rbee-hive/rbee-hive/"

// Rule is one row of the layer table.
type Rule struct {
	Dir       string   // module directory relative to the repo root, slash-separated
	MayImport []string // sibling module dirs it may import
	Anything  bool     // may import any module (the binary and tools)
}

// Table is a layer table: the module list and what each may import.
type Table []Rule

// DefaultTable is the layer table of DESIGN.md. It is the one place the
// layers are written down; CI runs the checker against it.
var DefaultTable = Table{
	{Dir: "registry"},
	{Dir: "resources"},
	{Dir: "provisioner", MayImport: []string{"resources"}},
	{Dir: "restart"},
	{Dir: "monitor", MayImport: []string{"registry", "resources", "provisioner", "restart"}},
	{Dir: "metrics", MayImport: []string{"registry", "resources", "provisioner"}},
	{Dir: "shutdown", MayImport: []string{"registry", "monitor"}},
	{Dir: "httpmiddleware"},
	{Dir: "httpserver", MayImport: []string{
		"registry", "resources", "provisioner", "restart", "monitor", "metrics", "shutdown", "httpmiddleware",
	}},
	{Dir: "cmd/rbee-hive", Anything: true},
	{Dir: "tools", Anything: true},
}

// Violation is one thing the layer table does not allow.
type Violation struct {
	File string // relative to the checked root, slash-separated
	Line int    // 0 when the problem is not on a line
	Msg  string
}

func (v Violation) String() string {
	if v.Line == 0 {
		return v.File + ": " + v.Msg
	}
	return fmt.Sprintf("%s:%d: %s", v.File, v.Line, v.Msg)
}

// Report is the outcome of a check.
type Report struct {
	Violations []Violation
	Modules    int // modules checked
	Files      int // Go files parsed
	Requires   int // sibling requires checked
}

// Check checks the workspace at root against table t: every module's Go
// files and go.mod, and go.work's use list against the table. It returns an
// error only when it cannot do its job (unreadable files); everything the
// table forbids is a Violation.
func Check(root string, t Table) (*Report, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	c := &checker{root: root, table: t, rules: map[string]Rule{}, rep: &Report{}}
	for _, r := range t {
		c.rules[r.Dir] = r
	}
	if err := c.checkWork(); err != nil {
		return nil, err
	}
	for _, r := range t {
		if err := c.checkModule(r); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(c.rep.Violations, func(i, j int) bool {
		a, b := c.rep.Violations[i], c.rep.Violations[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	return c.rep, nil
}

// validate catches a table that names a sibling it does not list.
func (t Table) validate() error {
	dirs := map[string]bool{}
	for _, r := range t {
		if dirs[r.Dir] {
			return fmt.Errorf("layer table: %s listed twice", r.Dir)
		}
		dirs[r.Dir] = true
	}
	for _, r := range t {
		for _, m := range r.MayImport {
			if !dirs[m] {
				return fmt.Errorf("layer table: %s may import %s, which is not in the table", r.Dir, m)
			}
		}
	}
	return nil
}

// closure returns the modules dir may depend on, directly or through the
// modules it may import.
func (t Table) closure(dir string, rules map[string]Rule) map[string]bool {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(d string) {
		for _, m := range rules[d].MayImport {
			if !seen[m] {
				seen[m] = true
				visit(m)
			}
		}
	}
	visit(dir)
	return seen
}

type checker struct {
	root  string
	table Table
	rules map[string]Rule
	rep   *Report
}

func (c *checker) add(file string, line int, format string, args ...any) {
	c.rep.Violations = append(c.rep.Violations, Violation{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// checkWork compares go.work's use list with the table, both ways. A
// workspace without go.work is checked by the table alone.
func (c *checker) checkWork() error {
	data, err := os.ReadFile(filepath.Join(c.root, "go.work"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read go.work: %w", err)
	}
	wf, err := modfile.ParseWork("go.work", data, nil)
	if err != nil {
		c.add("go.work", 0, "cannot parse: %v", err)
		return nil
	}
	used := map[string]bool{}
	for _, u := range wf.Use {
		dir := path.Clean(filepath.ToSlash(u.Path))
		used[dir] = true
		if _, ok := c.rules[dir]; !ok {
			c.add("go.work", u.Syntax.Start.Line, "go.work uses %s, which is not in the layer table", u.Path)
		}
	}
	for _, r := range c.table {
		if !used[r.Dir] {
			c.add("go.work", 0, "module %s of the layer table is not in go.work's use list", r.Dir)
		}
	}
	return nil
}

// checkModule checks one module's go.mod and every Go file under its dir.
func (c *checker) checkModule(r Rule) error {
	dir := filepath.Join(c.root, filepath.FromSlash(r.Dir))
	if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil || fi.IsDir() {
		c.add(r.Dir, 0, "module dir of the layer table does not exist (no %s/go.mod)", r.Dir)
		return nil
	}
	c.rep.Modules++
	if err := c.checkGoMod(r); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", r.Dir, err)
		}
		if d.IsDir() {
			if p == dir {
				return nil
			}
			name := d.Name()
			// testdata holds inputs, not code; dot dirs are caches the go
			// tool ignores; a nested go.mod is another module's business.
			if name == "testdata" || strings.HasPrefix(name, ".") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			// The go tool compiles a symlinked file, so it is checked too.
			if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		return c.checkGoFile(r, p)
	})
}

func (c *checker) rel(p string) string {
	if r, err := filepath.Rel(c.root, p); err == nil {
		return filepath.ToSlash(r)
	}
	return filepath.ToSlash(p)
}

// checkGoFile parses only the imports, whatever the file's build constraints.
func (c *checker) checkGoFile(r Rule, p string) error {
	src, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read %s: %w", c.rel(p), err)
	}
	c.rep.Files++
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, p, src, parser.ImportsOnly)
	if err != nil {
		// A file nobody can parse could hide an import: fail, do not skip.
		c.add(c.rel(p), 0, "cannot parse imports: %v", err)
		return nil
	}
	for _, imp := range f.Imports {
		ip, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			continue // the parser already rejects malformed import paths
		}
		if msg := c.importProblem(r, ip); msg != "" {
			c.add(c.rel(p), fset.Position(imp.Path.Pos()).Line, "%s", msg)
		}
	}
	return nil
}

// moduleOf maps an internal import path to the table's module dir that holds
// it (longest match), or "" when no module of the table does.
func (c *checker) moduleOf(importPath string) string {
	rest := strings.TrimPrefix(importPath, ModulePrefix)
	best := ""
	for dir := range c.rules {
		if (rest == dir || strings.HasPrefix(rest, dir+"/")) && len(dir) > len(best) {
			best = dir
		}
	}
	return best
}

// importProblem says why module r may not import ip, or "" when it may.
func (c *checker) importProblem(r Rule, ip string) string {
	if !strings.HasPrefix(ip, ModulePrefix) {
		return "" // standard library or third party: not the layer table's business
	}
	target := c.moduleOf(ip)
	if target == r.Dir || r.Anything {
		return ""
	}
	if target == "" || !slices.Contains(r.MayImport, target) {
		return fmt.Sprintf("module %s may not import %s (layer table)", r.Dir, ip)
	}
	return ""
}

// checkGoMod checks the module path, sibling requires and their replaces.
func (c *checker) checkGoMod(r Rule) error {
	rel := path.Join(r.Dir, "go.mod")
	data, err := os.ReadFile(filepath.Join(c.root, filepath.FromSlash(rel)))
	if err != nil {
		return fmt.Errorf("read %s: %w", rel, err)
	}
	mf, err := modfile.Parse(rel, data, nil)
	if err != nil {
		c.add(rel, 0, "cannot parse: %v", err)
		return nil
	}
	if want := ModulePrefix + r.Dir; mf.Module == nil || mf.Module.Mod.Path != want {
		got, line := "(none)", 0
		if mf.Module != nil {
			got, line = mf.Module.Mod.Path, mf.Module.Syntax.Start.Line
		}
		c.add(rel, line, "module path is %s, want %s", got, want)
	}
	closure := c.table.closure(r.Dir, c.rules)
	for _, req := range mf.Require {
		p := req.Mod.Path
		if !strings.HasPrefix(p, ModulePrefix) {
			continue
		}
		c.rep.Requires++
		line := req.Syntax.Start.Line
		target := c.moduleOf(p)
		if target != "" && strings.TrimPrefix(p, ModulePrefix) != target {
			target = "" // a path below a module is not a module of the table
		}
		switch {
		case r.Anything && target != "":
		case target == "":
			c.add(rel, line, "module %s may not require %s: not a module of the layer table", r.Dir, p)
			continue
		case !req.Indirect && !slices.Contains(r.MayImport, target):
			c.add(rel, line, "module %s may not require %s (layer table)", r.Dir, p)
		case req.Indirect && !closure[target]:
			c.add(rel, line, "module %s may not require %s, even indirectly (layer table)", r.Dir, p)
		}
		c.checkReplace(r, rel, line, mf, p, target)
	}
	return nil
}

// checkReplace wants a sibling require replaced by the sibling's relative
// path, so that GOWORK=off builds use the code in this checkout.
func (c *checker) checkReplace(r Rule, rel string, line int, mf *modfile.File, p, target string) {
	want := relPath(r.Dir, target)
	for _, rep := range mf.Replace {
		if rep.Old.Path != p {
			continue
		}
		if rep.New.Version != "" || path.Clean(rep.New.Path) != want {
			c.add(rel, rep.Syntax.Start.Line, "module %s replaces %s with %s, want %s", r.Dir, p, rep.New.Path, want)
		}
		return
	}
	c.add(rel, line, "module %s requires %s without a replace => %s", r.Dir, p, want)
}

// relPath is the slash path from module dir from to module dir to, the form
// a go.mod replace needs ("../registry", "../../tools").
func relPath(from, to string) string {
	up := strings.Repeat("../", strings.Count(from, "/")+1)
	return path.Clean(up + to)
}
