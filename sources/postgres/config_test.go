package postgres

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseTableList(t *testing.T) {
	tests := []struct {
		in   string
		want [][2]string // schema, table of each entry as splitTableName reads it
		err  string
	}{
		{in: "", want: nil},
		{in: "public.orders, Sales.Items", want: [][2]string{{"public", "orders"}, {"sales", "items"}}},
		{in: `"My Schema"."Odd,Table"`, want: [][2]string{{"My Schema", "Odd,Table"}}},
		{in: `"a.b"."c""d", x.y`, want: [][2]string{{"a.b", `c"d`}, {"x", "y"}}},
		{in: "orders", err: `"orders" is not schema.table`},
		{in: "a.b.c", err: "is not schema.table"},
		{in: `public."open`, err: "unterminated quote"},
		{in: "public.orders,,x.y", err: "empty name"},
		{in: "public.bad table", err: `"bad table" is not an SQL name (quote it: "bad table")`},
		{in: "public.1st", err: "not an SQL name"},
		{in: "public.été, s.t$1", want: [][2]string{{"public", "été"}, {"s", "t$1"}}},
	}
	for _, tt := range tests {
		got, err := ParseTableList(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseTableList(%q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTableList(%q): %v", tt.in, err)
			continue
		}
		var parts [][2]string
		for _, e := range got {
			s, n, err := splitTableName(e)
			if err != nil {
				t.Errorf("ParseTableList(%q) gave %q, which the source refuses: %v", tt.in, e, err)
			}
			parts = append(parts, [2]string{s, n})
		}
		if diff := cmp.Diff(tt.want, parts); diff != "" {
			t.Errorf("ParseTableList(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestValidateNames(t *testing.T) {
	for _, s := range []string{"cdcbridge", "_x", "a1", strings.Repeat("s", 63)} {
		if err := ValidateSlot(s); err != nil {
			t.Errorf("ValidateSlot(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "1abc", "My_Slot", "a-b", strings.Repeat("s", 64)} {
		if ValidateSlot(s) == nil {
			t.Errorf("ValidateSlot(%q) accepted", s)
		}
	}
	for _, s := range []string{"Pub$X", "pub$x", strings.Repeat("p", 52)} {
		if ValidatePublication(s) == nil {
			t.Errorf("ValidatePublication(%q) accepted", s)
		}
	}
	if err := ValidatePublication(strings.Repeat("p", 51)); err != nil {
		t.Errorf("ValidatePublication(51 characters): %v", err)
	}
}
