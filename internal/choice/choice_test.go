package choice

import "testing"

func TestCheck(t *testing.T) {
	if err := Check("b", "a", "b"); err != nil {
		t.Errorf("allowed value refused: %v", err)
	}
	err := Check("c", "a", "b")
	if err == nil || err.Error() != `unknown value "c" (one of a, b)` {
		t.Errorf("got %v", err)
	}
}
