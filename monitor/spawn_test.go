package monitor

import (
	"net"
	"strconv"
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

// TestPortFreeAgreesWithNetListen: a listening port is taken; once closed,
// it is free again even with a connection of it left in TIME_WAIT, as
// net.Listen (SO_REUSEADDR) would have it, so a restart keeps its port.
func TestPortFreeAgreesWithNetListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if portFree(port) {
		t.Fatalf("port %d is listened on, reported free", port)
	}
	// A connection the server side closes first leaves the port's end in
	// TIME_WAIT.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if server := <-accepted; server != nil {
		server.Close()
	}
	_, _ = client.Read(make([]byte, 1)) // EOF once the server's FIN arrived
	client.Close()
	ln.Close()
	free := portFree(port)
	again, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err == nil {
		again.Close()
	}
	if free != (err == nil) {
		t.Fatalf("portFree = %v, net.Listen err = %v: they must agree", free, err)
	}
	if !free {
		t.Fatalf("closed port %d (TIME_WAIT left) reported taken", port)
	}
}
