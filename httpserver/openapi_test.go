package httpserver

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/httpserver/client"
)

// The schemas of openapi.json name exactly the JSON fields of the types
// the server encodes and decodes, so the document cannot drift from the
// wire.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	types := map[string]any{
		"Worker":            client.Worker{},
		"Exit":              client.Exit{},
		"WorkerList":        client.WorkerList{},
		"SpawnRequest":      client.SpawnRequest{},
		"ReadyRequest":      client.ReadyRequest{},
		"HeartbeatRequest":  client.HeartbeatRequest{},
		"ShutdownRequest":   client.ShutdownRequest{},
		"ShutdownResult":    client.ShutdownResult{},
		"WorkerHealth":      client.WorkerHealth{},
		"HealthList":        client.HealthList{},
		"ProvisionRequest":  client.ProvisionRequest{},
		"ProvisionAccepted": client.ProvisionAccepted{},
		"ProvisionStatus":   client.ProvisionStatus{},
		"Model":             client.Model{},
		"ModelList":         client.ModelList{},
		"CatalogEntry":      client.CatalogEntry{},
		"Catalog":           client.Catalog{},
		"EvictRequest":      client.EvictRequest{},
		"EvictResult":       client.EvictResult{},
		"Health":            client.Health{},
		"Device":            client.Device{},
		"CacheStatus":       client.CacheStatus{},
		"Status":            client.Status{},
		"ShutdownStatus":    client.ShutdownStatus{},
		"Error":             httpmiddleware.ErrorBody{},
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Type       any                        `json:"type"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	for name, v := range types {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s", name)
			continue
		}
		var documented []string
		for p := range schema.Properties {
			documented = append(documented, p)
		}
		sort.Strings(documented)
		if got := jsonFields(reflect.TypeOf(v)); !slices.Equal(got, documented) {
			t.Errorf("schema %s: properties %v, Go type encodes %v", name, documented, got)
		}
	}
	for name, schema := range doc.Components.Schemas {
		if _, ok := types[name]; !ok && schema.Type == "object" {
			t.Errorf("schema %s is not checked against a Go type", name)
		}
	}
}

func jsonFields(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
