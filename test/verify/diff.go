package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// jsonDiff names where two JSON documents differ: up to a few paths with
// both values, so that a report says which field of a repeated record
// moved. Documents that do not parse are compared byte by byte.
func jsonDiff(a, b []byte) string {
	va, errA := decodeJSON(a)
	vb, errB := decodeJSON(b)
	if errA != nil || errB != nil {
		i := 0
		for i < len(a) && i < len(b) && a[i] == b[i] {
			i++
		}
		return fmt.Sprintf("bytes differ from offset %d (lengths %d and %d)", i, len(a), len(b))
	}
	var diffs []string
	walkDiff("", va, vb, &diffs)
	if len(diffs) == 0 {
		return "same JSON value, different bytes"
	}
	const most = 4
	more := ""
	if len(diffs) > most {
		more = fmt.Sprintf("; and %d more", len(diffs)-most)
		diffs = diffs[:most]
	}
	return strings.Join(diffs, "; ") + more
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

func walkDiff(path string, a, b any, out *[]string) {
	ma, okA := a.(map[string]any)
	mb, okB := b.(map[string]any)
	if okA && okB {
		keys := map[string]bool{}
		for k := range ma {
			keys[k] = true
		}
		for k := range mb {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			va, inA := ma[k]
			vb, inB := mb[k]
			switch {
			case !inA:
				*out = append(*out, fmt.Sprintf("%s.%s: absent, then %s", path, k, short(vb)))
			case !inB:
				*out = append(*out, fmt.Sprintf("%s.%s: %s, then absent", path, k, short(va)))
			default:
				walkDiff(path+"."+k, va, vb, out)
			}
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		p := path
		if p == "" {
			p = "."
		}
		*out = append(*out, fmt.Sprintf("%s: %s, then %s", p, short(a), short(b)))
	}
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}
