package client

import (
	"context"

	"github.com/rbee-hive/rbee-hive/httpserver/events"
)

// Watch follows GET /v1/events, reconnecting and resuming from the last
// event id (see events.Watch).
func (c *Client) Watch(ctx context.Context, opts events.WatchOptions) (*events.Stream, error) {
	return events.Watch(ctx, c.base, c.token, c.hc, opts)
}
