// Package security attacks the real rbee-hive binary over 127.0.0.1: every
// route with missing, wrong, malformed and oversized credentials; path
// traversal and symlink tricks through model references, evict, logs and
// worker ids; a hub that redirects to another host or in circles; huge and
// slow requests. Each refusal must be a 4xx with the error envelope (never
// a 5xx for a client's mistake), audited, and no token may ever reach the
// audit log or the daemon's log.
package security

import (
	"testing"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
