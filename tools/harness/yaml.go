package harness

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// writeYAML renders a config tree (maps with string keys, lists, strings,
// numbers, booleans) as block-style YAML, the way a user writes the file.
// Keys are sorted so the file is stable.
func writeYAML(v map[string]any) string {
	var b strings.Builder
	yamlMap(&b, v, 0)
	return b.String()
}

func yamlMap(b *strings.Builder, m map[string]any, indent int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pad := strings.Repeat("  ", indent)
	for _, k := range keys {
		switch v := m[k].(type) {
		case map[string]any:
			if len(v) == 0 {
				fmt.Fprintf(b, "%s%s: {}\n", pad, k)
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", pad, k)
			yamlMap(b, v, indent+1)
		case []string:
			if len(v) == 0 {
				fmt.Fprintf(b, "%s%s: []\n", pad, k)
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", pad, k)
			for _, s := range v {
				fmt.Fprintf(b, "%s  - %s\n", pad, yamlScalar(s))
			}
		case []any:
			if len(v) == 0 {
				fmt.Fprintf(b, "%s%s: []\n", pad, k)
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", pad, k)
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					// A list of tables: the first key on the dash line.
					var sub strings.Builder
					yamlMap(&sub, em, 0)
					lines := strings.Split(strings.TrimRight(sub.String(), "\n"), "\n")
					for i, l := range lines {
						lead := "  "
						if i == 0 {
							lead = "- "
						}
						fmt.Fprintf(b, "%s  %s%s\n", pad, lead, l)
					}
					continue
				}
				fmt.Fprintf(b, "%s  - %s\n", pad, yamlScalar(e))
			}
		default:
			fmt.Fprintf(b, "%s%s: %s\n", pad, k, yamlScalar(v))
		}
	}
}

// yamlScalar quotes strings (JSON-style double quotes are valid YAML for the
// ASCII strings configs hold) and prints numbers and booleans as they are.
func yamlScalar(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case nil:
		return "null"
	default:
		return fmt.Sprint(v)
	}
}

// mergeTree sets every leaf of src into dst, descending into maps, so that
// options override single keys of the defaults; a nil value removes the key.
func mergeTree(dst, src map[string]any) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeTree(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}
