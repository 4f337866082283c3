package postgres

import (
	"bytes"
	"unsafe"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// kind is how a type's text form becomes JSON. The kinds follow
// PostgreSQL's own to_jsonb (jsonb_categorize_type): domains are looked
// through, booleans and numbers become JSON literals, json and jsonb are
// embedded, date and timestamps take the ISO 8601 ("XSD") form, arrays
// become nested JSON arrays, and everything else is its text form.
type kind uint8

const (
	kindText        kind = iota // JSON string of the text form
	kindBool                    // t/f -> true/false
	kindNumber                  // verbatim, except NaN and ±Infinity as strings
	kindJSON                    // embedded as it is
	kindDate                    // text form (ISO DateStyle already gives to_jsonb's form)
	kindTimestamp               // "YYYY-MM-DD HH:MM:SS" -> "YYYY-MM-DDTHH:MM:SS"
	kindTimestampTZ             // as timestamp, with the offset as +HH:MM
	kindArray                   // {..} text form -> JSON array of the element kind
	kindVector                  // int2vector/oidvector: space-separated elements
	kindComposite               // (a,b) text form -> JSON object of the attributes
)

// typeInfo describes how to convert values of one type OID.
type typeInfo struct {
	kind  kind
	elem  *typeInfo // kindArray, kindVector
	delim byte      // kindArray element delimiter (',' except for box)
	name  string    // for logs and errors
	// kindComposite: the attributes, in order.
	fields []compositeField
}

// appendValue appends the JSON form of text, a non-NULL value of type ti in
// PostgreSQL's text output form.
func appendValue(b []byte, ti *typeInfo, text []byte) []byte {
	switch ti.kind {
	case kindBool:
		if len(text) == 1 && text[0] == 't' {
			return append(b, "true"...)
		}
		if len(text) == 1 && text[0] == 'f' {
			return append(b, "false"...)
		}
		return appendString(b, text)
	case kindNumber:
		if isJSONNumber(text) {
			return append(b, text...)
		}
		return appendString(b, text) // NaN, Infinity, -Infinity
	case kindJSON:
		if len(text) == 0 {
			return append(b, "null"...)
		}
		return append(b, text...)
	case kindTimestamp:
		return appendTimestamp(b, text, false)
	case kindTimestampTZ:
		return appendTimestamp(b, text, true)
	case kindArray:
		if out, ok := appendArray(b, ti, text); ok {
			return out
		}
		return appendString(b, text)
	case kindVector:
		return appendVector(b, ti.elem, text)
	case kindComposite:
		if out, ok := appendComposite(b, ti, text); ok {
			return out
		}
		return appendString(b, text)
	default: // kindText, kindDate
		return appendString(b, text)
	}
}

func appendString(b, text []byte) []byte {
	if len(text) == 0 {
		return append(b, `""`...)
	}
	// AppendJSONString only reads the string during the call, so the bytes
	// can be viewed as a string without the copy (one allocation per value
	// on the hot path otherwise).
	return cdc.AppendJSONString(b, unsafe.String(&text[0], len(text)))
}

// isJSONNumber reports whether s is a number in JSON's grammar. PostgreSQL's
// numeric output functions produce exactly that or NaN/Infinity, so the
// check is what separates the two; anything else is written as a string
// rather than corrupting the document.
func isJSONNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i >= len(s) {
		return false
	}
	switch {
	case s[i] == '0':
		i++
	case s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(s)
}

// appendTimestamp turns the ISO DateStyle output of timestamp and
// timestamptz into to_jsonb's form: a 'T' between date and time, and for
// timestamptz an offset of at least hours and minutes (+00 -> +00:00).
// Infinities and a trailing " BC" stay as they are, as in to_jsonb.
func appendTimestamp(b, text []byte, tz bool) []byte {
	sp := bytes.IndexByte(text, ' ')
	if sp < 0 || sp == 0 || text[0] < '0' || text[0] > '9' || !plainASCII(text) {
		return appendString(b, text) // infinity, -infinity; anything not ISO output
	}
	b = append(b, '"')
	b = append(b, text[:sp]...)
	b = append(b, 'T')
	rest := text[sp+1:]
	if !tz {
		b = append(b, rest...)
		return append(b, '"')
	}
	// rest is HH:MM:SS[.ffffff](+|-)HH[:MM[:SS]][ BC]
	off := bytes.IndexAny(rest, "+-")
	if off < 0 {
		b = append(b, rest...)
		return append(b, '"')
	}
	b = append(b, rest[:off]...)
	zone := rest[off:]
	suffix := []byte(nil)
	if i := bytes.IndexByte(zone, ' '); i >= 0 {
		zone, suffix = zone[:i], zone[i:]
	}
	b = append(b, zone...)
	if len(zone) == 3 { // +HH
		b = append(b, ":00"...)
	}
	b = append(b, suffix...)
	return append(b, '"')
}

// plainASCII reports whether s can be written inside a JSON string as it
// is: printable ASCII without quotes or backslashes, as PostgreSQL's ISO
// date and time output always is.
func plainASCII(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// appendVector converts int2vector and oidvector ("1 2 3") to an array.
func appendVector(b []byte, elem *typeInfo, text []byte) []byte {
	b = append(b, '[')
	first := true
	for _, f := range bytes.Fields(text) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendValue(b, elem, f)
	}
	return append(b, ']')
}
