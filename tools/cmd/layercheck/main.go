// Command layercheck enforces the layer table of DESIGN.md on a checkout:
//
//	go run ./tools/cmd/layercheck .
//
// The argument is the repository root (default "."). It prints every
// violation as file:line: message and exits 1 if there is any, 2 if it could
// not check, and prints a one-line summary when the workspace is clean.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/rbee-hive/rbee-hive/tools/layers"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	root := "."
	switch len(args) {
	case 0:
	case 1:
		root = args[0]
	default:
		fmt.Fprintln(stderr, "usage: layercheck [repo-root]")
		return 2
	}
	rep, err := layers.Check(root, layers.DefaultTable)
	if err != nil {
		fmt.Fprintf(stderr, "layercheck: %v\n", err)
		return 2
	}
	for _, v := range rep.Violations {
		fmt.Fprintln(stderr, v)
	}
	if n := len(rep.Violations); n > 0 {
		fmt.Fprintf(stderr, "layercheck: %d violation(s) of the layer table\n", n)
		return 1
	}
	fmt.Fprintf(stdout, "layercheck: ok: %d modules, %d Go files, %d sibling requires follow the layer table\n",
		rep.Modules, rep.Files, rep.Requires)
	return 0
}
