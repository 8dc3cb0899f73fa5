package monitor

import (
	"strings"
	"testing"
)

func TestWorkerEnvDropsTheHivesSecrets(t *testing.T) {
	env := workerEnv(
		[]string{"PATH=/bin", "RBEE_HIVE_TOKEN=admin", "RBEE_HIVE_AUTH__TOKEN=admin", "RBEE_WORKER_TOKEN=other", "HOME=/root"},
		[]string{"EXTRA=1"},
		"RBEE_WORKER_ID=w", "RBEE_WORKER_TOKEN=mine", "RBEE_HIVE_URL=http://127.0.0.1:8080")
	got := strings.Join(env, " ")
	want := "PATH=/bin HOME=/root EXTRA=1 RBEE_WORKER_ID=w RBEE_WORKER_TOKEN=mine RBEE_HIVE_URL=http://127.0.0.1:8080"
	if got != want {
		t.Fatalf("env = %q, want %q", got, want)
	}
}
