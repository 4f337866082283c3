package postgres

// Array text form (array_out): an optional dimension decoration
// "[1:2][0:3]=" when a lower bound is not 1, then nested braces. Elements
// are NULL (unquoted), quoted with backslash escapes, or bare. array_out
// quotes every element that is empty, spells NULL, or contains a brace,
// quote, backslash, delimiter or whitespace, so a bare element needs no
// unescaping. to_jsonb ignores the bounds and writes nested JSON arrays;
// so do we.

// appendArray appends the JSON array for the text form of an array of
// ti.elem. It returns ok=false (and b unchanged in meaning) when text is not
// a well-formed array, so the caller can fall back to a string.
func appendArray(b []byte, ti *typeInfo, text []byte) ([]byte, bool) {
	start := len(b)
	p := arrayParser{s: text, delim: ti.delim, elem: ti.elem}
	if p.delim == 0 {
		p.delim = ','
	}
	if len(p.s) > 0 && p.s[0] == '[' {
		for p.i < len(p.s) && p.s[p.i] != '=' {
			p.i++
		}
		p.i++ // '='
	}
	out, ok := p.parse(b)
	if !ok || p.i != len(p.s) {
		return b[:start], false
	}
	return out, true
}

type arrayParser struct {
	s     []byte
	i     int
	delim byte
	elem  *typeInfo
}

// parse reads one brace level starting at p.i.
func (p *arrayParser) parse(b []byte) ([]byte, bool) {
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return b, false
	}
	p.i++
	b = append(b, '[')
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return append(b, ']'), true
	}
	for {
		if p.i >= len(p.s) {
			return b, false
		}
		var ok bool
		switch p.s[p.i] {
		case '{':
			b, ok = p.parse(b)
		case '"':
			b, ok = p.quoted(b)
		default:
			b, ok = p.bare(b)
		}
		if !ok || p.i >= len(p.s) {
			return b, false
		}
		switch p.s[p.i] {
		case p.delim:
			p.i++
			b = append(b, ',')
		case '}':
			p.i++
			return append(b, ']'), true
		default:
			return b, false
		}
	}
}

func (p *arrayParser) quoted(b []byte) ([]byte, bool) {
	p.i++ // opening quote
	start := p.i
	escaped := false
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case '\\':
			escaped = true
			p.i += 2
			continue
		case '"':
			raw := p.s[start:p.i]
			p.i++
			if escaped {
				raw = unescapeArrayElement(raw)
			}
			return appendValue(b, p.elem, raw), true
		}
		p.i++
	}
	return b, false
}

func (p *arrayParser) bare(b []byte) ([]byte, bool) {
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
		p.i++
	}
	raw := p.s[start:p.i]
	if len(raw) == 0 {
		return b, false
	}
	if len(raw) == 4 && (raw[0]|0x20) == 'n' && (raw[1]|0x20) == 'u' && (raw[2]|0x20) == 'l' && (raw[3]|0x20) == 'l' {
		return append(b, "null"...), true
	}
	return appendValue(b, p.elem, raw), true
}

func unescapeArrayElement(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' && i+1 < len(raw) {
			i++
		}
		out = append(out, raw[i])
	}
	return out
}
