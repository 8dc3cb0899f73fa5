package security

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestHugeBodies: a body over 1 MiB is 413 with the envelope whether its
// length is declared, chunked or a lie, without the hive reading (or
// waiting for) the rest; unauthenticated it is 401 whatever its size. The
// refusals of authenticated mutating calls are audited.
func TestHugeBodies(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	big := `{"model_ref":"` + strings.Repeat("a", 2<<20) + `"}`
	for _, path := range []string{"/v1/workers/spawn", "/v1/models/provision", "/v1/workers/shutdown", "/v1/workers/ready", "/v1/heartbeat"} {
		if r := d.Request("POST", path, big); r.Status != 413 || errorCode(r.Body) != "PAYLOAD_TOO_LARGE" {
			t.Errorf("POST %s with 2 MiB: %d %.200s, want 413 PAYLOAD_TOO_LARGE", path, r.Status, r.Body)
		}
		if r := d.RequestAuth("POST", path, "", big); r.Status != 401 {
			t.Errorf("POST %s with 2 MiB and no token: %d, want 401", path, r.Status)
		}
	}
	// Declared 1 GiB, 10 bytes sent: answered at once, not after a wait
	// for the rest.
	conn := dial(t, d)
	fmt.Fprintf(conn, "POST /v1/workers/spawn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"model_re", d.Token, 1<<30)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 413 {
		t.Errorf("declared 1 GiB body: %v %v, want 413 before the body arrives", resp, err)
	}
	conn.Close()
	// Chunked, no length, 3 MiB streamed.
	conn = dial(t, d)
	fmt.Fprintf(conn, "POST /v1/models/provision HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", d.Token)
	go func() {
		chunk := strings.Repeat("b", 64<<10)
		for i := 0; i < 48; i++ {
			if _, err := fmt.Fprintf(conn, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
				return
			}
		}
		io.WriteString(conn, "0\r\n\r\n")
	}()
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 413 {
		t.Errorf("chunked 3 MiB body: %v %v, want 413", resp, err)
	}
	conn.Close()

	// Framing tricks (request smuggling): a 4xx (or 501 for an unknown
	// transfer coding), never a success and never another 5xx. A chunked
	// framing wins over a length (RFC 9112) and carries an empty body.
	for name, head := range map[string]string{
		"length and chunked":   "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
		"two lengths":          "Content-Length: 2\r\nContent-Length: 40\r\n",
		"negative length":      "Content-Length: -1\r\n",
		"unknown coding":       "Transfer-Encoding: gzip, chunked\r\n",
		"length with a space":  "Content-Length: 1 0\r\n",
		"header without colon": "X-Broken\r\n",
	} {
		c := dial(t, d)
		body := "{}"
		if strings.Contains(head, "chunked") {
			body = "0\r\n\r\n"
		}
		fmt.Fprintf(c, "POST /v1/models/provision HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n%s\r\n%s", d.Token, head, body)
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if (resp.StatusCode < 400 || resp.StatusCode >= 500) && resp.StatusCode != 501 {
			t.Errorf("%s: %d, want a 4xx (or 501 for an unknown coding)", name, resp.StatusCode)
		}
		c.Close()
	}

	var audited int
	for _, a := range auditEntries(t, d) {
		if s, _ := a["status"].(float64); s == 413 {
			audited++
		}
	}
	if audited < 5 {
		t.Errorf("%d audit entries with status 413, want every refused authenticated call", audited)
	}
	if r := d.Request("GET", "/v1/status", nil); r.Status != 200 {
		t.Fatalf("status afterwards: %d", r.Status)
	}
}

func dial(t *testing.T, d *harness.Daemon) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.Port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSlowloris: connections that send their headers one byte at a time
// are cut off by the read-header timeout (10s) and, while fifty of them
// hang, the hive still answers at once. With RBEE_SECURITY_LONG=1 a body
// trickled at one byte a second is also cut off, by the 60s read timeout.
func TestSlowloris(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	const n = 50
	var wg sync.WaitGroup
	cut := make(chan time.Duration, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		c := dial(t, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
			buf := make([]byte, 512)
			for j := 0; j < 60; j++ {
				if _, err := io.WriteString(c, "a"); err != nil {
					break
				}
				c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Read(buf); err != nil && !isTimeout(err) {
					break // the server answered (408) or closed
				}
			}
			cut <- time.Since(start)
		}()
	}
	// Meanwhile the hive serves.
	for i := 0; i < 5; i++ {
		if r := d.Request("GET", "/v1/status", nil); r.Status != 200 {
			t.Errorf("status during the slowloris: %d", r.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	close(cut)
	var worst time.Duration
	for c := range cut {
		worst = max(worst, c)
	}
	if worst > 30*time.Second {
		t.Errorf("slow header connections lasted up to %s; the read-header timeout is 10s", worst)
	}
	t.Logf("%d slowloris connections cut after at most %s", n, worst.Round(time.Second))

	if os.Getenv("RBEE_SECURITY_LONG") != "1" {
		return
	}
	c := dial(t, d)
	fmt.Fprintf(c, "POST /v1/workers/spawn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", d.Token)
	t0 := time.Now()
	for time.Since(t0) < 120*time.Second {
		if _, err := io.WriteString(c, " "); err != nil {
			break
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 512)); err != nil && !isTimeout(err) {
			break
		}
	}
	if took := time.Since(t0); took > 90*time.Second {
		t.Errorf("a body trickled at 1 B/s held its connection for %s; the read timeout is 60s", took)
	} else {
		t.Logf("slow body cut after %s", took.Round(time.Second))
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
