package httpmiddleware

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Route is a method and an exact path.
type Route struct {
	Method string
	Path   string
}

// WorkerAuthenticator reports whether token is the per-worker token of
// workerID. It must compare in constant time (monitor.AuthenticateWorker
// does).
type WorkerAuthenticator func(workerID, token string) bool

// AuthConfig configures Auth.
type AuthConfig struct {
	// Token is the admin bearer token. "" turns authentication off (the
	// daemon only allows that on loopback).
	Token string
	// Exempt routes are served without a token (GET /v1/health).
	Exempt []Route
	// WorkerRoutes are the worker callbacks: besides the admin token they
	// accept the per-worker token of the worker named by the JSON body's
	// "worker_id", checked by AuthenticateWorker.
	WorkerRoutes       []Route
	AuthenticateWorker WorkerAuthenticator
	// Audit receives a line for every denied request; nil discards.
	Audit *AuditLog
	// MaxBodyBytes bounds the body read to find a worker callback's id
	// (larger is 413 PAYLOAD_TOO_LARGE); 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// Fingerprint identifies a token in logs without revealing it: the first 6
// hex characters of its sha256. "" for no token.
func Fingerprint(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:3])
}

// bearerAuth is the challenge sent with every 401 (RFC 6750).
const bearerAuth = `Bearer realm="rbee-hive"`

// Auth authenticates every request before it reaches routing.
//
// The Authorization header must be "Bearer <token>"; the scheme is matched
// case-insensitively (RFC 7235: "bearer x" is accepted), and the token is
// compared in constant time through sha256 digests, so neither its content
// nor its length leaks through timing. No header (or an empty one) is 401
// MISSING_API_KEY; anything else that does not match is 401
// INVALID_API_KEY. Both carry WWW-Authenticate: Bearer and are audited with
// the token's fingerprint, never the token.
func Auth(cfg AuthConfig) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(cfg.Token))
	exempt := routeSet(cfg.Exempt)
	workerRoutes := routeSet(cfg.WorkerRoutes)
	maxBody := cfg.MaxBodyBytes
	if maxBody <= 0 {
		maxBody = DefaultMaxBodyBytes
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r, info := WithInfo(r)
			route := Route{r.Method, r.URL.Path}
			if cfg.Token == "" {
				// Without a token anything local may call, so a browser on
				// this machine must not be turned into a caller.
				if reason := browserRisk(r); reason != "" {
					cfg.Audit.Denied(r, info, reason)
					WriteError(w, http.StatusForbidden, CodeForbidden,
						"refused without a token: "+reason+"; call 127.0.0.1 or localhost without an Origin, or configure a token", nil)
					return
				}
			}
			if cfg.Token == "" || exempt[route] {
				info.Principal = PrincipalAnonymous
				next.ServeHTTP(w, r)
				return
			}
			deny := func(code, reason string) {
				cfg.Audit.Denied(r, info, reason)
				w.Header().Set("WWW-Authenticate", bearerAuth)
				msg := "a valid bearer token is required"
				if code == CodeMissingAPIKey {
					msg = "missing bearer token: send Authorization: Bearer <token>"
				}
				WriteError(w, http.StatusUnauthorized, code, msg, nil)
			}

			header := r.Header.Get("Authorization")
			if strings.TrimSpace(header) == "" {
				deny(CodeMissingAPIKey, "no Authorization header")
				return
			}
			token, ok := parseBearer(header)
			if !ok {
				deny(CodeInvalidAPIKey, "Authorization is not a Bearer token")
				return
			}
			info.TokenFingerprint = Fingerprint(token)
			got := sha256.Sum256([]byte(token))
			if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
				info.Principal = PrincipalAdmin
				next.ServeHTTP(w, r)
				return
			}
			if !workerRoutes[route] || cfg.AuthenticateWorker == nil {
				deny(CodeInvalidAPIKey, "token does not match")
				return
			}

			// A worker callback: the worker id is in the body, so read it
			// (bounded), find the id, and put the bytes back for the handler,
			// which decodes them strictly.
			var body []byte
			var err error
			if r.ContentLength <= maxBody {
				body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			}
			var tooLarge *http.MaxBytesError
			if r.ContentLength > maxBody || errors.As(err, &tooLarge) || int64(len(body)) > maxBody {
				cfg.Audit.Denied(r, info, "body too large to authenticate a worker")
				WriteError(w, http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
					"request body exceeds the size limit", map[string]any{"limit_bytes": maxBody})
				return
			}
			if err != nil {
				deny(CodeInvalidAPIKey, "reading the worker callback body failed")
				return
			}
			var probe struct {
				WorkerID string `json:"worker_id"`
			}
			if json.Unmarshal(body, &probe) != nil || probe.WorkerID == "" {
				deny(CodeInvalidAPIKey, "worker callback without a readable worker_id")
				return
			}
			if !cfg.AuthenticateWorker(probe.WorkerID, token) {
				deny(CodeInvalidAPIKey, "worker token does not match "+probe.WorkerID)
				return
			}
			info.Principal = PrincipalWorker
			info.WorkerID = probe.WorkerID
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			next.ServeHTTP(w, r)
		})
	}
}

// browserRisk says why a request may come from a web page rather than a
// local client, or "" when it may not. A page on any site can make a
// browser send simple requests (POST without a preflight) to loopback,
// always with an Origin header; DNS rebinding lets a page read answers
// under its own host name, which then is the Host header. Command-line and
// program clients send no Origin and name the loopback address they dial.
func browserRisk(r *http.Request) string {
	if !loopbackName(hostOnly(r.Host)) {
		return fmt.Sprintf("Host %q is not a loopback name", r.Host)
	}
	if origin, ok := r.Header["Origin"]; ok {
		u, err := url.Parse(strings.Join(origin, ""))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !loopbackName(u.Hostname()) {
			return fmt.Sprintf("Origin %q is not a loopback origin", strings.Join(origin, ","))
		}
	}
	return ""
}

// hostOnly strips the port of a Host header ("[::1]:8080" → "::1").
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// loopbackName reports whether host is localhost or a loopback IP ("" is
// an HTTP/1.0 request without Host, which no browser sends).
func loopbackName(host string) bool {
	if host == "" || strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseBearer returns the token of "Bearer <token>". The token must be
// non-empty printable ASCII without spaces (RFC 6750 token68 is stricter,
// but opaque tokens from files often carry other punctuation).
func parseBearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return "", false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return "", false
		}
	}
	return token, true
}

func routeSet(routes []Route) map[Route]bool {
	m := make(map[Route]bool, len(routes))
	for _, rt := range routes {
		m[rt] = true
	}
	return m
}
