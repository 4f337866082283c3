package deploy

// A strict reader for the subset of YAML that the files under deploy/ are
// written in. The module has no YAML library, and the tests must not take
// one on for a few manifests, so the files keep to a subset that this
// reader understands completely, and it rejects everything else instead of
// guessing:
//
//   - block mappings and sequences (a sequence may sit at its key's indent);
//   - plain, single-quoted and double-quoted scalars on one line;
//   - literal (|) and folded (>) block scalars with clip, strip or keep
//     chomping;
//   - flow sequences and mappings on one line ([a, b], {k: v});
//   - comments and "---" document separators.
//
// Rejected: anchors, aliases, tags, complex keys, multi-line plain or quoted
// scalars, tabs in indentation, duplicate keys, and plain scalars that YAML
// 1.1 readers (Kubernetes, Compose) and YAML 1.2 readers resolve
// differently (yes/no/on/off, leading-zero numbers, sexagesimals,
// underscores in numbers). Values come out as encoding/json would give
// them: map[string]any, []any, string, int64, float64, bool, nil.

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

type yamlLine struct {
	n      int    // 1-based line number
	indent int    // columns before text
	text   string // without indentation and comment; may be empty only in block scalars
	raw    string // the whole line, for block scalars
}

type yamlParser struct {
	name  string
	lines []yamlLine
	pos   int
}

func (p *yamlParser) errorf(n int, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", p.name, n, fmt.Sprintf(format, args...))
}

// parseYAML returns the documents of src.
func parseYAML(name string, src string) ([]any, error) {
	var docs []any
	var cur []yamlLine
	flush := func(force bool) error {
		if len(cur) == 0 && !force {
			return nil
		}
		p := &yamlParser{name: name, lines: cur}
		v, err := p.document()
		if err != nil {
			return err
		}
		docs = append(docs, v)
		cur = nil
		return nil
	}
	started := false
	for i, raw := range strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n") {
		n := i + 1
		if raw == "---" || strings.HasPrefix(raw, "--- ") || strings.HasPrefix(raw, "---\t") {
			if rest := strings.TrimSpace(strings.TrimPrefix(raw, "---")); rest != "" && !strings.HasPrefix(rest, "#") {
				return nil, fmt.Errorf("%s:%d: content after --- is not supported", name, n)
			}
			if err := flush(started); err != nil {
				return nil, err
			}
			started = true
			continue
		}
		if raw == "..." || strings.HasPrefix(raw, "%") {
			return nil, fmt.Errorf("%s:%d: directives and document end markers are not supported", name, n)
		}
		body := strings.TrimLeft(raw, " ")
		indent := len(raw) - len(body)
		if strings.HasPrefix(body, "\t") {
			return nil, fmt.Errorf("%s:%d: tab in indentation", name, n)
		}
		text, err := stripComment(body)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		cur = append(cur, yamlLine{n: n, indent: indent, text: strings.TrimRight(text, " \t"), raw: raw})
		started = true
	}
	if err := flush(false); err != nil {
		return nil, err
	}
	return docs, nil
}

// stripComment removes a comment: '#' at the start or after white space,
// outside quotes. Quotes count only where a scalar can start.
func stripComment(s string) (string, error) {
	inS, inD := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inD:
			if c == '\\' {
				i++
			} else if c == '"' {
				inD = false
			}
		case inS:
			if c == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					i++
				} else {
					inS = false
				}
			}
		case c == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return s[:i], nil
		case (c == '"' || c == '\'') && quoteCanStart(s, i):
			if c == '"' {
				inD = true
			} else {
				inS = true
			}
		}
	}
	if inS || inD {
		// A quoted scalar that goes on to the next line.
		return "", fmt.Errorf("quoted scalar not closed on its line (multi-line quoted scalars are not supported)")
	}
	return s, nil
}

// quoteCanStart reports whether a quote at s[i] opens a quoted scalar: at
// the start, or after "- ", ": ", "[", "{", ",", or "? ".
func quoteCanStart(s string, i int) bool {
	j := i - 1
	for j >= 0 && s[j] == ' ' {
		j--
	}
	if j < 0 {
		return true
	}
	switch s[j] {
	case '[', '{', ',':
		return true
	case '-', ':':
		return j < i-1 // followed by a space
	}
	return false
}

func (p *yamlParser) document() (any, error) {
	p.skipBlank()
	if p.pos >= len(p.lines) {
		return nil, nil
	}
	v, err := p.node(p.lines[p.pos].indent)
	if err != nil {
		return nil, err
	}
	p.skipBlank()
	if p.pos < len(p.lines) {
		l := p.lines[p.pos]
		return nil, p.errorf(l.n, "unexpected content at indent %d", l.indent)
	}
	return v, nil
}

func (p *yamlParser) skipBlank() {
	for p.pos < len(p.lines) && p.lines[p.pos].text == "" {
		p.pos++
	}
}

// node parses the block node whose first line is at p.pos, indented indent.
func (p *yamlParser) node(indent int) (any, error) {
	p.skipBlank()
	l := p.lines[p.pos]
	if l.indent != indent {
		return nil, p.errorf(l.n, "indentation %d, want %d", l.indent, indent)
	}
	if isSeqItem(l.text) {
		return p.sequence(indent)
	}
	if _, _, ok, err := splitKey(l.text); err != nil {
		return nil, p.errorf(l.n, "%v", err)
	} else if ok {
		return p.mapping(indent)
	}
	// A lone scalar node (a document, or a value on the line after its key).
	p.pos++
	return p.scalarValue(l, l.text, indent)
}

func isSeqItem(t string) bool { return t == "-" || strings.HasPrefix(t, "- ") }

func (p *yamlParser) sequence(indent int) (any, error) {
	out := []any{}
	for {
		p.skipBlank()
		if p.pos >= len(p.lines) {
			return out, nil
		}
		l := p.lines[p.pos]
		if l.indent < indent {
			return out, nil
		}
		if l.indent > indent {
			return nil, p.errorf(l.n, "unexpected indentation %d in a sequence at %d", l.indent, indent)
		}
		if !isSeqItem(l.text) {
			return out, nil
		}
		rest := strings.TrimPrefix(l.text, "-")
		trimmed := strings.TrimLeft(rest, " ")
		if trimmed == "" {
			// The item is on the following, deeper lines (or null).
			p.pos++
			p.skipBlank()
			if p.pos < len(p.lines) && p.lines[p.pos].indent > indent {
				v, err := p.node(p.lines[p.pos].indent)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			} else {
				out = append(out, nil)
			}
			continue
		}
		_, _, isKey, err := splitKey(trimmed)
		if err != nil {
			return nil, p.errorf(l.n, "%v", err)
		}
		if !isKey && !isSeqItem(trimmed) {
			p.pos++
			v, err := p.scalarValue(l, trimmed, indent)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			continue
		}
		// A mapping or sequence starts on this line: treat "- " as
		// indentation.
		col := indent + 1 + (len(rest) - len(trimmed))
		p.lines[p.pos] = yamlLine{n: l.n, indent: col, text: trimmed, raw: l.raw}
		v, err := p.node(col)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

func (p *yamlParser) mapping(indent int) (any, error) {
	out := map[string]any{}
	for {
		p.skipBlank()
		if p.pos >= len(p.lines) {
			return out, nil
		}
		l := p.lines[p.pos]
		if l.indent < indent {
			return out, nil
		}
		if l.indent > indent {
			return nil, p.errorf(l.n, "unexpected indentation %d in a mapping at %d", l.indent, indent)
		}
		if isSeqItem(l.text) {
			return nil, p.errorf(l.n, "sequence item where a mapping key was expected")
		}
		key, val, ok, err := splitKey(l.text)
		if err != nil {
			return nil, p.errorf(l.n, "%v", err)
		}
		if !ok {
			return nil, p.errorf(l.n, "expected key: value, got %q", l.text)
		}
		if _, dup := out[key]; dup {
			return nil, p.errorf(l.n, "duplicate key %q", key)
		}
		p.pos++
		if val != "" {
			v, err := p.scalarValue(l, val, indent)
			if err != nil {
				return nil, err
			}
			out[key] = v
			continue
		}
		// The value is on the following lines: deeper, or a sequence at
		// the key's own indent.
		p.skipBlank()
		switch {
		case p.pos >= len(p.lines):
			out[key] = nil
		case p.lines[p.pos].indent > indent:
			v, err := p.node(p.lines[p.pos].indent)
			if err != nil {
				return nil, err
			}
			out[key] = v
		case p.lines[p.pos].indent == indent && isSeqItem(p.lines[p.pos].text):
			v, err := p.sequence(indent)
			if err != nil {
				return nil, err
			}
			out[key] = v
		default:
			out[key] = nil
		}
	}
}

// splitKey splits "key: value" (or "key:"). ok is false for a line that is
// not a mapping entry.
func splitKey(t string) (key, val string, ok bool, err error) {
	if strings.HasPrefix(t, "? ") || t == "?" {
		return "", "", false, fmt.Errorf("complex keys are not supported")
	}
	var keyEnd int
	switch t[0] {
	case '"', '\'':
		s, n, err := quoted(t)
		if err != nil {
			return "", "", false, err
		}
		rest := t[n:]
		if rest != ":" && !strings.HasPrefix(rest, ": ") {
			return "", "", false, nil // a quoted scalar, not a key
		}
		return s, strings.TrimSpace(rest[1:]), true, nil
	case '[', '{':
		return "", "", false, nil
	}
	keyEnd = -1
	for i := 0; i < len(t); i++ {
		if t[i] == ':' && (i == len(t)-1 || t[i+1] == ' ') {
			keyEnd = i
			break
		}
	}
	if keyEnd < 0 {
		return "", "", false, nil
	}
	key = strings.TrimSpace(t[:keyEnd])
	if key == "" {
		return "", "", false, fmt.Errorf("empty key")
	}
	if strings.ContainsAny(key[:1], "&*!|>%@`") {
		return "", "", false, fmt.Errorf("key %q starts with an unsupported indicator", key)
	}
	return key, strings.TrimSpace(t[keyEnd+1:]), true, nil
}

// scalarValue parses a value that starts on line l (after "key: " or "- "):
// a block scalar header, a flow collection, a quoted or a plain scalar.
func (p *yamlParser) scalarValue(l yamlLine, v string, parentIndent int) (any, error) {
	switch v[0] {
	case '|', '>':
		return p.blockScalar(l, v, parentIndent)
	case '[', '{':
		fv, n, err := flowValue(v)
		if err != nil {
			return nil, p.errorf(l.n, "%v", err)
		}
		if strings.TrimSpace(v[n:]) != "" {
			return nil, p.errorf(l.n, "unexpected %q after a flow collection", v[n:])
		}
		return fv, nil
	case '"', '\'':
		s, n, err := quoted(v)
		if err != nil {
			return nil, p.errorf(l.n, "%v", err)
		}
		if strings.TrimSpace(v[n:]) != "" {
			return nil, p.errorf(l.n, "unexpected %q after a quoted scalar", v[n:])
		}
		return s, nil
	}
	if err := p.noContinuation(l, parentIndent); err != nil {
		return nil, err
	}
	r, err := plainScalar(v)
	if err != nil {
		return nil, p.errorf(l.n, "%v", err)
	}
	return r, nil
}

// noContinuation rejects a plain scalar continued on deeper lines.
func (p *yamlParser) noContinuation(l yamlLine, parentIndent int) error {
	q := p.pos
	for q < len(p.lines) && p.lines[q].text == "" {
		q++
	}
	if q < len(p.lines) && p.lines[q].indent > parentIndent {
		return p.errorf(p.lines[q].n, "multi-line plain scalars are not supported (use | or >)")
	}
	return nil
}

func (p *yamlParser) blockScalar(l yamlLine, header string, parentIndent int) (any, error) {
	style := header[0]
	chomp := byte(0)
	for _, c := range []byte(header[1:]) {
		switch {
		case c == '-' || c == '+':
			if chomp != 0 {
				return nil, p.errorf(l.n, "bad block scalar header %q", header)
			}
			chomp = c
		default:
			return nil, p.errorf(l.n, "unsupported block scalar header %q (indentation indicators are not supported)", header)
		}
	}
	// Content: the following lines indented deeper than the parent, and
	// blank lines among them.
	var body []yamlLine
	for p.pos < len(p.lines) {
		nl := p.lines[p.pos]
		if strings.TrimSpace(nl.raw) != "" && nl.indent <= parentIndent {
			break
		}
		body = append(body, nl)
		p.pos++
	}
	contentIndent := -1
	for _, b := range body {
		if strings.TrimSpace(b.raw) != "" {
			contentIndent = len(b.raw) - len(strings.TrimLeft(b.raw, " "))
			break
		}
	}
	var lines []string
	for _, b := range body {
		switch {
		case strings.TrimSpace(b.raw) == "":
			lines = append(lines, "")
		case len(b.raw)-len(strings.TrimLeft(b.raw, " ")) < contentIndent:
			return nil, p.errorf(b.n, "block scalar line less indented than its first line")
		default:
			lines = append(lines, b.raw[contentIndent:])
		}
	}
	// Trailing blank lines belong to chomping.
	end := len(lines)
	for end > 0 && lines[end-1] == "" {
		end--
	}
	trailing := len(lines) - end
	lines = lines[:end]
	var s string
	if style == '|' {
		s = strings.Join(lines, "\n")
	} else {
		var b strings.Builder
		for i, ln := range lines {
			if strings.HasPrefix(ln, " ") || strings.HasPrefix(ln, "\t") {
				return nil, p.errorf(l.n, "more-indented lines in a folded scalar are not supported")
			}
			switch {
			case i == 0:
			case ln == "":
				b.WriteByte('\n')
				continue
			case lines[i-1] == "":
			default:
				b.WriteByte(' ')
			}
			b.WriteString(ln)
		}
		s = b.String()
	}
	if len(lines) == 0 {
		return "", nil
	}
	switch chomp {
	case '-':
	case '+':
		s += strings.Repeat("\n", 1+trailing)
	default:
		s += "\n"
	}
	return s, nil
}

// quoted parses a quoted scalar at the start of s, returning it and the
// bytes consumed.
func quoted(s string) (string, int, error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		if q == '\'' {
			if c == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					b.WriteByte('\'')
					i++
					continue
				}
				return b.String(), i + 1, nil
			}
			b.WriteByte(c)
			continue
		}
		switch c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			if i+1 >= len(s) {
				return "", 0, fmt.Errorf("unfinished escape")
			}
			i++
			switch e := s[i]; e {
			case '\\', '"', '/':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '0':
				b.WriteByte(0)
			case ' ':
				b.WriteByte(' ')
			case 'u', 'x', 'U':
				width := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
				if i+width >= len(s) {
					return "", 0, fmt.Errorf("short \\%c escape", e)
				}
				r, err := strconv.ParseUint(s[i+1:i+1+width], 16, 32)
				if err != nil {
					return "", 0, fmt.Errorf("bad \\%c escape: %v", e, err)
				}
				b.WriteRune(rune(r))
				i += width
			default:
				return "", 0, fmt.Errorf("unsupported escape \\%c", e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("unterminated quoted scalar")
}

// flowValue parses a one-line flow collection or flow scalar at the start
// of s.
func flowValue(s string) (any, int, error) {
	i := 0
	skip := func() {
		for i < len(s) && s[i] == ' ' {
			i++
		}
	}
	var value func() (any, error)
	value = func() (any, error) {
		skip()
		if i >= len(s) {
			return nil, fmt.Errorf("unterminated flow collection")
		}
		switch s[i] {
		case '[':
			i++
			out := []any{}
			for {
				skip()
				if i < len(s) && s[i] == ']' {
					i++
					return out, nil
				}
				v, err := value()
				if err != nil {
					return nil, err
				}
				out = append(out, v)
				skip()
				if i < len(s) && s[i] == ',' {
					i++
					continue
				}
				if i < len(s) && s[i] == ']' {
					i++
					return out, nil
				}
				return nil, fmt.Errorf("expected , or ] in flow sequence")
			}
		case '{':
			i++
			out := map[string]any{}
			for {
				skip()
				if i < len(s) && s[i] == '}' {
					i++
					return out, nil
				}
				k, err := value()
				if err != nil {
					return nil, err
				}
				ks, isStr := k.(string)
				if !isStr {
					return nil, fmt.Errorf("flow mapping key %v is not a string", k)
				}
				skip()
				if i >= len(s) || s[i] != ':' {
					return nil, fmt.Errorf("expected : after flow mapping key %q", ks)
				}
				i++
				if _, dup := out[ks]; dup {
					return nil, fmt.Errorf("duplicate key %q", ks)
				}
				v, err := value()
				if err != nil {
					return nil, err
				}
				out[ks] = v
				skip()
				if i < len(s) && s[i] == ',' {
					i++
					continue
				}
				if i < len(s) && s[i] == '}' {
					i++
					return out, nil
				}
				return nil, fmt.Errorf("expected , or } in flow mapping")
			}
		case '"', '\'':
			str, n, err := quoted(s[i:])
			if err != nil {
				return nil, err
			}
			i += n
			return str, nil
		}
		start := i
		for i < len(s) && !strings.ContainsRune(",[]{}", rune(s[i])) {
			if s[i] == ':' && (i+1 == len(s) || s[i+1] == ' ' || strings.ContainsRune(",]}", rune(s[i+1]))) {
				break
			}
			i++
		}
		return plainScalar(strings.TrimSpace(s[start:i]))
	}
	v, err := value()
	if err != nil {
		return nil, 0, err
	}
	return v, i, nil
}

var (
	yamlInt      = regexp.MustCompile(`^[-+]?(0|[1-9][0-9]*)$`)
	yamlFloat    = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)
	yamlAmbigNum = regexp.MustCompile(`^[-+]?(0[0-9]+|[0-9][0-9_]*_[0-9_]*|[0-9]+(:[0-5]?[0-9])+(\.[0-9]*)?|0b[01_]+)$`)
	yaml11Bool   = regexp.MustCompile(`^(?i:y|n|yes|no|on|off)$`)
)

// plainScalar resolves a plain scalar by the YAML 1.2 core schema, and
// rejects forms that YAML 1.1 resolves differently.
func plainScalar(s string) (any, error) {
	if s == "" {
		return nil, nil
	}
	if strings.ContainsAny(s[:1], "&*!%@`|>") {
		return nil, fmt.Errorf("plain scalar %q starts with an unsupported indicator", s)
	}
	if strings.HasPrefix(s, "- ") || strings.Contains(s, ": ") || strings.Contains(s, " #") {
		return nil, fmt.Errorf("plain scalar %q is ambiguous: quote it", s)
	}
	switch s {
	case "~", "null", "Null", "NULL":
		return nil, nil
	case "true", "True", "TRUE":
		return true, nil
	case "false", "False", "FALSE":
		return false, nil
	case ".inf", ".Inf", ".INF", "+.inf":
		return math.Inf(1), nil
	case "-.inf", "-.Inf", "-.INF":
		return math.Inf(-1), nil
	case ".nan", ".NaN", ".NAN":
		return math.NaN(), nil
	}
	if yaml11Bool.MatchString(s) || yamlAmbigNum.MatchString(s) {
		return nil, fmt.Errorf("plain scalar %q means different things in YAML 1.1 and 1.2: quote it", s)
	}
	if yamlInt.MatchString(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("integer %q: %v", s, err)
		}
		return n, nil
	}
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0o") {
		return nil, fmt.Errorf("plain scalar %q: hex and octal numbers are not supported: quote it or write it in decimal", s)
	}
	if yamlFloat.MatchString(s) {
		return strconv.ParseFloat(s, 64)
	}
	return s, nil
}
