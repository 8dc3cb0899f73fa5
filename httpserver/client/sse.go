package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ProvisionEvents streams a provision's Server-Sent Events: "progress"
// events, then one "done" or "error", after which Next returns io.EOF.
// Close the stream when done with it (or cancel ctx).
func (c *Client) ProvisionEvents(ctx context.Context, id string) (*ProvisionEventStream, error) {
	path := "/v1/models/provision/" + url.PathEscape(id) + "/events"
	req, err := c.newRequest(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rbee-hive: GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	return &ProvisionEventStream{body: resp.Body, sc: newSSEScanner(resp.Body)}, nil
}

// ProvisionEventStream reads the events of one provision. Not safe for
// concurrent use.
type ProvisionEventStream struct {
	body io.ReadCloser
	sc   *sseScanner
	done bool
}

// Next returns the next event; io.EOF after the final done or error event.
func (s *ProvisionEventStream) Next() (ProvisionEvent, error) {
	if s.done {
		return ProvisionEvent{}, io.EOF
	}
	for {
		typ, data, err := s.sc.next()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the stream ended without done or error
			}
			return ProvisionEvent{}, fmt.Errorf("rbee-hive: provision events: %w", err)
		}
		ev := ProvisionEvent{Type: typ}
		switch typ {
		case "progress":
			ev.Status = &ProvisionStatus{}
			err = json.Unmarshal(data, ev.Status)
		case "done":
			s.done = true
			ev.Model = &Model{}
			err = json.Unmarshal(data, ev.Model)
		case "error":
			s.done = true
			ev.Err = decodeEnvelope(data)
		default:
			continue // unknown events are for newer clients
		}
		if err != nil {
			return ProvisionEvent{}, fmt.Errorf("rbee-hive: provision %s event: %w", typ, err)
		}
		return ev, nil
	}
}

// Close ends the stream.
func (s *ProvisionEventStream) Close() error { return s.body.Close() }

// sseScanner splits a text/event-stream into events.
type sseScanner struct {
	r *bufio.Reader
}

func newSSEScanner(r io.Reader) *sseScanner { return &sseScanner{r: bufio.NewReader(r)} }

// next returns the next event's type ("message" when unnamed) and data.
func (s *sseScanner) next() (string, []byte, error) {
	typ := ""
	var data []string
	hasData := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			return "", nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if !hasData {
				typ = ""
				continue
			}
			if typ == "" {
				typ = "message"
			}
			return typ, []byte(strings.Join(data, "\n")), nil
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			data = append(data, value)
			hasData = true
		}
	}
}
