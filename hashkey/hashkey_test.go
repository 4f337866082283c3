package hashkey

import (
	"math/big"
	"testing"
)

func TestOf(t *testing.T) {
	// MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
	want := Key{0x0cc175b9c0f1b6a8, 0x31c399e269772661}
	if got := Of("a"); got != want {
		t.Errorf("Of(a) = %x, want %x", got, want)
	}
	if got := OfBytes([]byte("a")); got != want {
		t.Errorf("OfBytes(a) = %x, want %x", got, want)
	}
}

func TestParseAndString(t *testing.T) {
	for _, s := range []string{"0", "1", "18446744073709551615", "18446744073709551616",
		"113427455640312821154458202477256070485", "340282366920938463463374607431768211455"} {
		k, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%s): %v", s, err)
		}
		if k.String() != s {
			t.Errorf("Parse(%s).String() = %s", s, k)
		}
		if want, _ := new(big.Int).SetString(s, 10); k.Big().Cmp(want) != 0 {
			t.Errorf("Parse(%s).Big() = %s", s, k.Big())
		}
	}
	if k, _ := Parse("18446744073709551616"); k != (Key{1, 0}) {
		t.Errorf("2^64 = %x", k)
	}
	if k, _ := Parse("340282366920938463463374607431768211455"); k != Max {
		t.Errorf("2^128-1 = %x", k)
	}
	if k, err := Parse("007"); err != nil || k != (Key{0, 7}) {
		t.Errorf("Parse(007) = %x, %v", k, err)
	}
	for _, s := range []string{"", "-1", "+1", "x", "1 ", "340282366920938463463374607431768211456", "3402823669209384634633746074317682114550"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = Parse("226854911280625642308916404954512140970") }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func TestCompare(t *testing.T) {
	keys := []Key{{0, 0}, {0, 1}, {0, ^uint64(0)}, {1, 0}, Max}
	for i, a := range keys {
		for j, b := range keys {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("%x.Compare(%x) = %d, want %d", a, b, got, want)
			}
			if a.Less(b) != (want < 0) {
				t.Errorf("%x.Less(%x) = %v", a, b, a.Less(b))
			}
		}
	}
}
