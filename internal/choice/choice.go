// Package choice checks a value against the values an option allows.
package choice

import (
	"fmt"
	"slices"
	"strings"
)

// Check returns nil when s is one of allowed, else an error naming s and
// the allowed values (not the option: each caller prefixes its own name).
func Check(s string, allowed ...string) error {
	if slices.Contains(allowed, s) {
		return nil
	}
	return fmt.Errorf("unknown value %q (one of %s)", s, strings.Join(allowed, ", "))
}
