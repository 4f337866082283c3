package dynamodb

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// DynamoDB values become plain JSON (DESIGN.md): N an exact JSON number,
// S a string, B base64, BOOL, NULL as null, sets as arrays in the order the
// stream gave them, L arrays, M objects with their names sorted so that the
// same item always gives the same bytes.

// maxDepth bounds nesting; DynamoDB itself allows 32 levels.
const maxDepth = 64

// appendImage appends an item (a map of attributes) as a JSON object.
func appendImage(b []byte, item map[string]types.AttributeValue) ([]byte, error) {
	return appendMap(b, item, 0)
}

func appendMap(b []byte, m map[string]types.AttributeValue, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errors.New("nested deeper than 64 levels")
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	b = append(b, '{')
	for i, name := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = cdc.AppendJSONString(b, name)
		b = append(b, ':')
		var err error
		if b, err = appendValue(b, m[name], depth+1); err != nil {
			return b, fmt.Errorf("%s: %w", name, err)
		}
	}
	return append(b, '}'), nil
}

func appendValue(b []byte, av types.AttributeValue, depth int) ([]byte, error) {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return cdc.AppendJSONString(b, v.Value), nil
	case *types.AttributeValueMemberN:
		return appendNumber(b, v.Value)
	case *types.AttributeValueMemberB:
		return appendBase64(b, v.Value), nil
	case *types.AttributeValueMemberBOOL:
		return strconv.AppendBool(b, v.Value), nil
	case *types.AttributeValueMemberNULL:
		return append(b, "null"...), nil
	case *types.AttributeValueMemberSS:
		b = append(b, '[')
		for i, s := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			b = cdc.AppendJSONString(b, s)
		}
		return append(b, ']'), nil
	case *types.AttributeValueMemberNS:
		b = append(b, '[')
		for i, n := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendNumber(b, n); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case *types.AttributeValueMemberBS:
		b = append(b, '[')
		for i, x := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendBase64(b, x)
		}
		return append(b, ']'), nil
	case *types.AttributeValueMemberL:
		if depth > maxDepth {
			return b, errors.New("nested deeper than 64 levels")
		}
		b = append(b, '[')
		for i, x := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, x, depth+1); err != nil {
				return b, fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return append(b, ']'), nil
	case *types.AttributeValueMemberM:
		return appendMap(b, v.Value, depth)
	case nil:
		return b, errors.New("missing value")
	default:
		return b, fmt.Errorf("unsupported attribute value %T", av)
	}
}

func appendBase64(b, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendNumber writes a DynamoDB number as a JSON number with exactly its
// digits: verbatim when it already is valid JSON (DynamoDB returns numbers
// normalized, so that is the usual case), else rewritten without changing
// its value ("+5" -> 5, ".5" -> 0.5, "5." -> 5, "007" -> 7).
func appendNumber(b []byte, s string) ([]byte, error) {
	if isJSONNumber(s) {
		return append(b, s...), nil
	}
	d, err := parseDecimal(s)
	if err != nil {
		return b, err
	}
	if d.neg {
		b = append(b, '-')
	}
	b = append(b, d.int...)
	if d.frac != "" {
		b = append(b, '.')
		b = append(b, d.frac...)
	}
	if d.exp != "" {
		b = append(b, 'e')
		b = append(b, d.exp...)
	}
	return b, nil
}

// isJSONNumber reports whether s matches JSON's number grammar.
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i == len(s) || !isDigit(s[i]) {
			return false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i == len(s) || !isDigit(s[i]) {
			return false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return i == len(s)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// decimal is a parsed number: int and frac are digit strings (int at
// least "0", without leading zeros), exp the exponent with its sign as
// written ("" when absent).
type decimal struct {
	neg       bool
	int, frac string
	exp       string
}

func parseDecimal(s string) (decimal, error) {
	var d decimal
	rest := strings.TrimSpace(s)
	if rest != s || rest == "" {
		return d, fmt.Errorf("invalid number %q", s)
	}
	switch rest[0] {
	case '-':
		d.neg = true
		rest = rest[1:]
	case '+':
		rest = rest[1:]
	}
	mant, exp, hasExp := strings.Cut(strings.ToLower(rest), "e")
	ip, fp, _ := strings.Cut(mant, ".")
	if ip == "" && fp == "" || !allDigits(ip) || !allDigits(fp) {
		return d, fmt.Errorf("invalid number %q", s)
	}
	if hasExp {
		digits := strings.TrimLeft(exp, "+-")
		if len(exp)-len(digits) > 1 || digits == "" || !allDigits(digits) {
			return d, fmt.Errorf("invalid number %q", s)
		}
		d.exp = exp
	}
	d.int = strings.TrimLeft(ip, "0")
	if d.int == "" {
		d.int = "0"
	}
	d.frac = fp
	return d, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// appendCanonicalNumber writes the number in one form per value, so that
// a key written as 1, 1.0 or 10E-1 always gives the same partition key:
// no leading or trailing zeros, plain notation while the number stays
// within 40 characters, else d.dddE±x.
func appendCanonicalNumber(b []byte, s string) ([]byte, error) {
	d, err := parseDecimal(s)
	if err != nil {
		return b, err
	}
	exp := 0
	if d.exp != "" {
		e, err := strconv.Atoi(d.exp)
		if err != nil || e > 1_000_000 || e < -1_000_000 {
			return b, fmt.Errorf("invalid number %q", s)
		}
		exp = e
	}
	digits := strings.TrimLeft(d.int+d.frac, "0")
	exp -= len(d.frac) // value = digits × 10^exp
	trimmed := strings.TrimRight(digits, "0")
	exp += len(digits) - len(trimmed)
	digits = trimmed
	if digits == "" {
		return append(b, '0'), nil
	}
	if d.neg {
		b = append(b, '-')
	}
	n := len(digits)
	switch {
	case exp >= 0 && n+exp <= 40:
		b = append(b, digits...)
		for range exp {
			b = append(b, '0')
		}
	case exp < 0 && -exp < n:
		b = append(b, digits[:n+exp]...)
		b = append(b, '.')
		b = append(b, digits[n+exp:]...)
	case exp < 0 && -exp-n < 40-n:
		b = append(b, "0."...)
		for range -exp - n {
			b = append(b, '0')
		}
		b = append(b, digits...)
	default:
		b = append(b, digits[0])
		if n > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		b = append(b, 'E')
		b = strconv.AppendInt(b, int64(exp+n-1), 10)
	}
	return b, nil
}
