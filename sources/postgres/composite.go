package postgres

// Composite (row type) text form (record_out): "(f1,f2,...)"; an empty
// field is NULL; a field is quoted when it is empty or contains a quote,
// backslash, parenthesis, comma or whitespace, with quotes and backslashes
// doubled inside. to_jsonb writes an object of the attributes in order.

type compositeField struct {
	key []byte // JSON-encoded name followed by ':'
	ti  *typeInfo
}

// appendComposite appends the JSON object for a composite's text form, or
// returns ok=false when text does not fit the type as the bridge knows it
// (the type changed since it was looked up), so the caller writes a string.
func appendComposite(b []byte, ti *typeInfo, text []byte) ([]byte, bool) {
	start := len(b)
	if len(text) < 2 || text[0] != '(' || text[len(text)-1] != ')' {
		return b, false
	}
	s := text[1 : len(text)-1]
	b = append(b, '{')
	i := 0
	for f, field := range ti.fields {
		if f > 0 {
			if i >= len(s) || s[i] != ',' {
				return b[:start], false
			}
			i++
			b = append(b, ',')
		}
		b = append(b, field.key...)
		switch {
		case i >= len(s) || s[i] == ',':
			b = append(b, "null"...)
		case s[i] == '"':
			i++
			var val []byte
			for {
				if i >= len(s) {
					return b[:start], false
				}
				c := s[i]
				if c == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						val = append(val, '"')
						i += 2
						continue
					}
					i++
					break
				}
				if c == '\\' && i+1 < len(s) {
					i++
					c = s[i]
				}
				val = append(val, c)
				i++
			}
			if val == nil {
				val = []byte{}
			}
			b = appendValue(b, field.ti, val)
		default:
			j := i
			for j < len(s) && s[j] != ',' {
				j++
			}
			b = appendValue(b, field.ti, s[i:j])
			i = j
		}
	}
	if i != len(s) {
		return b[:start], false
	}
	return append(b, '}'), true
}
