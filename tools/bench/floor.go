package bench

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"time"
)

// floorLoad is the least any Go HTTP server can do for a list answer: a
// bare net/http server in this process serves a static body of size bytes
// and a health-sized one, loaded by the same clients as the daemon's
// endpoints. Its ratio bounds what the daemon's list ratio can reach on this
// machine, since over loopback the cost of a large answer is the kernel
// copying its bytes, not what produced them.
func floorLoad(ctx context.Context, size, conc int, dur time.Duration) (big, small load, err error) {
	body := bytes.Repeat([]byte("x"), size)
	health := []byte(`{"status":"alive","version":"0.0.0","api_version":"v1"}` + "\n")
	serve := func(b []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			_, _ = w.Write(b)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/big", serve(body))
	mux.Handle("/small", serve(health))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return load{}, load{}, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	hc := newHTTP()
	defer hc.CloseIdleConnections()
	base := "http://" + ln.Addr().String()
	small = hammer(ctx, hc, request{url: base + "/small"}, conc, dur)
	big = hammer(ctx, hc, request{url: base + "/big"}, conc, dur)
	return big, small, nil
}
