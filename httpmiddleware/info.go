package httpmiddleware

import (
	"context"
	"net/http"
)

// Principal says who a request authenticated as.
type Principal string

const (
	// PrincipalAnonymous is a request to an exempt route, or any request
	// when no admin token is configured.
	PrincipalAnonymous Principal = "anonymous"
	// PrincipalAdmin presented the admin token.
	PrincipalAdmin Principal = "admin"
	// PrincipalWorker presented the per-worker token of Info.WorkerID on a
	// worker callback route.
	PrincipalWorker Principal = "worker"
)

// Info is what the middlewares learned about one request. Stack puts one in
// the request context; the inner handler may set Route (the route template)
// so that logs, audit lines and metrics never carry a raw path.
//
// It is owned by the request's goroutine: handlers that start goroutines
// must copy what they need.
type Info struct {
	CorrelationID    string
	Principal        Principal
	WorkerID         string // set for PrincipalWorker
	TokenFingerprint string // Fingerprint of the presented token, "" when none
	// Route is the matched route template ("/v1/models/provision/:id"),
	// "" until the router matched one.
	Route string
}

type infoKey struct{}

// InfoFrom returns the request's Info, or nil outside Stack/WithInfo.
func InfoFrom(ctx context.Context) *Info {
	i, _ := ctx.Value(infoKey{}).(*Info)
	return i
}

// WithInfo returns r with an Info in its context, reusing one that is
// already there.
func WithInfo(r *http.Request) (*http.Request, *Info) {
	if i := InfoFrom(r.Context()); i != nil {
		return r, i
	}
	i := &Info{}
	return r.WithContext(context.WithValue(r.Context(), infoKey{}, i)), i
}

// SetRoute records the matched route template for logs, audit and metrics.
func SetRoute(ctx context.Context, route string) {
	if i := InfoFrom(ctx); i != nil {
		i.Route = route
	}
}

// CorrelationIDFrom returns the request's correlation id ("" outside
// CorrelationID).
func CorrelationIDFrom(ctx context.Context) string {
	if i := InfoFrom(ctx); i != nil {
		return i.CorrelationID
	}
	return ""
}
