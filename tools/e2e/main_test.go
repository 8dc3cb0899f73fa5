// Package e2e runs the real rbee-hive binary with the reference worker and a
// local Hugging Face hub, as a user would, and checks the contract of
// DESIGN.md from the outside: HTTP over 127.0.0.1, processes in /proc.
package e2e

import (
	"testing"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
