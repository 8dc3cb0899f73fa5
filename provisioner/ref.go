package provisioner

import (
	"strings"
)

// MaxRefLen is the longest model reference accepted, in bytes.
const MaxRefLen = 512

// String returns the canonical text of the reference.
func (r Ref) String() string {
	switch r.Kind {
	case KindHF:
		s := "hf:" + r.Repo
		if r.Path != "" {
			s += "/" + r.Path
		}
		if r.Revision != "" {
			s += "@" + r.Revision
		}
		return s
	case KindFile:
		return "file:" + r.File
	case KindCatalog:
		return r.Name
	}
	return ""
}

// revision returns the revision to ask the hub for.
func (r Ref) revision() string {
	if r.Revision == "" {
		return "main"
	}
	return r.Revision
}

func refErr(s, rule string) error { return &RefError{Ref: s, Rule: rule} }

// ParseRef checks the syntax of a reference (it does not consult the catalog
// or the local dirs; Provisioner.Resolve does).
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, refErr(s, "empty")
	}
	if len(s) > MaxRefLen {
		return Ref{}, refErr(s[:64]+"...", "too long")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return Ref{}, refErr(s, "control character")
		}
	}
	for i := 0; i < len(s); i++ {
		if !allowedByte(s[i]) {
			return Ref{}, refErr(s, "invalid character")
		}
	}
	for _, seg := range strings.FieldsFunc(s, func(r rune) bool { return r == '/' || r == ':' || r == '@' }) {
		if seg == ".." {
			return Ref{}, refErr(s, "traversal")
		}
	}
	switch {
	case strings.HasPrefix(s, "hf:"):
		return parseHF(s)
	case strings.HasPrefix(s, "file:"):
		p := s[len("file:"):]
		if !strings.HasPrefix(p, "/") {
			return Ref{}, refErr(s, "not absolute")
		}
		if strings.ContainsAny(p, ":@") {
			return Ref{}, refErr(s, "invalid character")
		}
		if err := checkSegments(s, p[1:], true); err != nil {
			return Ref{}, err
		}
		return Ref{Kind: KindFile, File: p}, nil
	case strings.Contains(s, ":"):
		return Ref{}, refErr(s, "unknown scheme")
	}
	// A catalog name: one plain word.
	if strings.ContainsAny(s, "/@") || s == "." {
		return Ref{}, refErr(s, "invalid catalog name")
	}
	return Ref{Kind: KindCatalog, Name: s}, nil
}

func parseHF(s string) (Ref, error) {
	body := s[len("hf:"):]
	if strings.Contains(body, ":") {
		return Ref{}, refErr(s, "invalid character")
	}
	rev := ""
	if i := strings.IndexByte(body, '@'); i >= 0 {
		body, rev = body[:i], body[i+1:]
		if rev == "" {
			return Ref{}, refErr(s, "empty revision")
		}
		if strings.Contains(rev, "@") {
			return Ref{}, refErr(s, "invalid character")
		}
		if err := checkSegments(s, rev, false); err != nil {
			return Ref{}, err
		}
	}
	parts := strings.SplitN(body, "/", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return Ref{}, refErr(s, "missing repo (want hf:org/repo)")
	}
	for _, name := range parts[:2] {
		if name == "." || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "-") {
			return Ref{}, refErr(s, "invalid repo name")
		}
	}
	r := Ref{Kind: KindHF, Repo: parts[0] + "/" + parts[1], Revision: rev}
	if len(parts) == 3 {
		if err := checkSegments(s, parts[2], false); err != nil {
			return Ref{}, err
		}
		r.Path = parts[2]
	}
	return r, nil
}

// checkSegments rejects empty, "." and ".." segments of a slash-separated
// path; a trailing slash is allowed only where allowTrailing says so (file:
// paths name directories too).
func checkSegments(s, p string, allowTrailing bool) error {
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		switch seg {
		case "..":
			return refErr(s, "traversal")
		case ".":
			return refErr(s, "dot segment")
		case "":
			if allowTrailing && i == len(segs)-1 && i > 0 {
				continue
			}
			if allowTrailing && len(segs) == 1 {
				continue // "file:/" is the root; the local-dir check refuses it
			}
			return refErr(s, "empty segment")
		}
	}
	return nil
}

func allowedByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-_./:@", c) >= 0
}
