package dedupe

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeClock is advanced by the test.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

const src = "/cdcbridge/postgres/7301234567890123456/appdb/cdcbridge"

// step is one call to Seen, after moving the clock by advance.
type step struct {
	advance            time.Duration
	source, id, pk, sq string
	dup                bool
	reason             string
}

func ev(id, pk, seq string) step { return step{source: src, id: id, pk: pk, sq: seq} }

func (s step) after(d time.Duration) step { s.advance = d; return s }
func (s step) from(source string) step    { s.source = source; return s }
func (s step) isDup() step                { s.dup, s.reason = true, ReasonDuplicateID; return s }
func (s step) isStale() step              { s.dup, s.reason = true, ReasonStaleSequence; return s }

func TestFilter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{
			name: "duplicate ids",
			steps: []step{
				ev("A:1", "t:[1]", "A:1"),
				ev("A:2", "t:[1]", "A:2"),
				ev("A:1", "t:[1]", "A:1").isDup(),
				ev("A:2", "t:[2]", "A:2").isDup(),
				ev("A:3", "t:[1]", "A:3"),
				ev("A:3", "t:[1]", "A:3").isDup(),
			},
		},
		{
			name: "same id from another source is new",
			steps: []step{
				ev("A:1", "t:[1]", "A:1"),
				ev("A:1", "t:[1]", "A:1").from("/cdcbridge/postgres/other/appdb/cdcbridge"),
				ev("A:1", "t:[1]", "A:1").from("/cdcbridge/postgres/other/appdb/cdcbridge").isDup(),
			},
		},
		{
			name: "source and id are not confused at their border",
			steps: []step{
				ev("b", "k", "1").from("a"),
				ev("", "k", "2").from("ab"),
				ev("b", "k", "3").from("a").isDup(),
			},
		},
		{
			name: "without monotonic mode sequences are not compared",
			steps: []step{
				ev("A:5", "t:[1]", "A:5"),
				ev("A:4", "t:[1]", "A:4"),
				ev("A:4bis", "t:[1]", "A:4"),
			},
		},
		{
			name: "monotonic: at or below the last sequence is stale",
			cfg:  Config{Monotonic: true},
			steps: []step{
				ev("A:2", "t:[1]", "A:2"),
				ev("A:1", "t:[1]", "A:1").isStale(),
				ev("A:2-again", "t:[1]", "A:2").isStale(),
				ev("A:3", "t:[1]", "A:3"),
				ev("A:1", "t:[2]", "A:1"), // another row has its own history
				ev("A:2", "t:[1]", "A:2").isDup(),
			},
		},
		{
			name: "monotonic: sequences compare as strings",
			cfg:  Config{Monotonic: true},
			steps: []step{
				ev("e9", "k", "9"),
				ev("e10", "k", "10").isStale(), // "10" < "9": sources pad their sequences
				ev("e90", "k", "90"),
				ev("s", "k", "S00000000016B3748:00000000"), // 'S' sorts after digits
				ev("x", "k", "00000000016B3748:00000003").isStale(),
			},
		},
		{
			name: "monotonic: rows of different sources are separate",
			cfg:  Config{Monotonic: true},
			steps: []step{
				ev("a", "t:[1]", "5"),
				ev("b", "t:[1]", "3").from("/other"),
				ev("c", "t:[1]", "4").isStale(),
			},
		},
		{
			name: "monotonic: events without a sequence skip the check",
			cfg:  Config{Monotonic: true},
			steps: []step{
				ev("a", "k", "5"),
				ev("b", "k", ""),
				ev("c", "k", "4").isStale(),
				ev("d", "k", "6"),
			},
		},
		{
			name: "monotonic: a stale event is not recorded",
			cfg:  Config{Monotonic: true, MaxKeys: 2},
			steps: []step{
				ev("a", "k", "5"),
				ev("b", "k", "4").isStale(),
				ev("c", "j", "1"), // both bounds reached
				ev("d", "l", "1"), // forgets id "a" and k's sequence
				ev("b", "k", "4"), // "b" was never recorded, so it is new now
			},
		},
		{
			name: "duplicate id wins over stale sequence",
			cfg:  Config{Monotonic: true},
			steps: []step{
				ev("a", "k", "5"),
				ev("b", "k", "6"),
				ev("a", "k", "5").isDup(),
			},
		},
		{
			name: "size bound forgets the oldest ids",
			cfg:  Config{MaxKeys: 3},
			steps: []step{
				ev("1", "k", ""), ev("2", "k", ""), ev("3", "k", ""),
				ev("1", "k", "").isDup(), // a hit does not refresh "1"
				ev("4", "k", ""),         // forgets "1"
				ev("2", "k", "").isDup(),
				ev("1", "k", ""), // forgets "2"
				ev("3", "k", "").isDup(),
				ev("2", "k", ""),
			},
		},
		{
			name: "size bound on partition keys forgets the least recently advanced",
			cfg:  Config{Monotonic: true, MaxKeys: 2},
			steps: []step{
				ev("a1", "a", "1"),
				ev("b1", "b", "1"),
				ev("a2", "a", "2"), // a advances, b is now the oldest
				ev("c1", "c", "1"), // forgets b (and id a1)
				ev("a0", "a", "0").isStale(),
				ev("b0", "b", "0"), // b's sequence is forgotten
			},
		},
		{
			name: "age bound forgets ids seen more than MaxAge ago",
			cfg:  Config{MaxAge: 10 * time.Second},
			steps: []step{
				ev("1", "k", ""),
				ev("2", "k", "").after(5 * time.Second),
				ev("1", "k", "").after(5 * time.Second).isDup(), // exactly MaxAge old: kept
				ev("1", "k", "").after(time.Nanosecond),         // older: forgotten, so new again
				ev("2", "k", "").isDup(),
				ev("2", "k", "").after(5 * time.Second),
				ev("1", "k", "").isDup(),
			},
		},
		{
			name: "age bound on partition keys counts from the last advance",
			cfg:  Config{Monotonic: true, MaxAge: 10 * time.Second},
			steps: []step{
				ev("a", "k", "1"),
				ev("b", "k", "2").after(8 * time.Second),
				ev("c", "k", "0").after(8 * time.Second).isStale(), // 8s since the advance to 2
				ev("d", "k", "1").after(3 * time.Second),           // 11s: forgotten
			},
		},
		{
			name: "clock going backwards forgets nothing early",
			cfg:  Config{MaxAge: 10 * time.Second},
			steps: []step{
				ev("1", "k", "").after(time.Hour),
				ev("1", "k", "").after(-2 * time.Hour).isDup(),
				ev("1", "k", "").after(time.Hour + 10*time.Second).isDup(),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
			tc.cfg.Now = clock.now
			f, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				clock.t = clock.t.Add(s.advance)
				dup, reason := f.Seen(s.source, s.id, s.pk, s.sq)
				if dup != s.dup || reason != s.reason {
					t.Fatalf("step %d Seen(%q, %q, %q, %q) = %v, %q; want %v, %q",
						i, s.source, s.id, s.pk, s.sq, dup, reason, s.dup, s.reason)
				}
			}
		})
	}
}

func TestBoundsHold(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	f, err := New(Config{MaxKeys: 50, MaxAge: time.Minute, Monotonic: true, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10_000 {
		clock.t = clock.t.Add(time.Second)
		f.Seen(src, fmt.Sprint(i), fmt.Sprintf("k%d", i%70), fmt.Sprintf("%08d", i))
		if f.Len() > 50 || f.Partitions() > 50 {
			t.Fatalf("after %d events: %d ids, %d partitions; bound is 50", i+1, f.Len(), f.Partitions())
		}
		if len(f.ids.entries) > 50 || len(f.parts.entries) > 50 {
			t.Fatalf("after %d events: %d and %d slots allocated; bound is 50", i+1, len(f.ids.entries), len(f.parts.entries))
		}
	}
	clock.t = clock.t.Add(time.Minute + time.Second)
	f.Seen(src, "last", "k", "z")
	if f.Len() != 1 || f.Partitions() != 1 {
		t.Errorf("after MaxAge of quiet: %d ids, %d partitions remembered; want 1, 1", f.Len(), f.Partitions())
	}
}

// TestOrderedMatchesModel drives the linked list through random-looking
// writes and removals and compares it with a plain slice.
func TestOrderedMatchesModel(t *testing.T) {
	o := newOrdered()
	var model []string // oldest first
	for i := range 5000 {
		k := fmt.Sprint((i * 7919) % 37)
		switch j, ok := o.lookup([]byte(k)); {
		case i%5 == 4 && o.len() > 0:
			o.removeOldest()
			model = model[1:]
		case ok:
			o.update(j, k, time.Duration(i))
			for m, v := range model {
				if v == k {
					model = append(model[:m], model[m+1:]...)
					break
				}
			}
			model = append(model, k)
		default:
			o.insert(k, k, time.Duration(i))
			model = append(model, k)
		}
		var got []string
		for e := o.oldest; e >= 0; e = o.entries[e].next {
			got = append(got, o.entries[e].key)
		}
		var back []string
		for e := o.newest; e >= 0; e = o.entries[e].prev {
			back = append([]string{o.entries[e].key}, back...)
		}
		if strings.Join(got, ",") != strings.Join(model, ",") || strings.Join(back, ",") != strings.Join(model, ",") || o.len() != len(model) {
			t.Fatalf("step %d: list %v (backwards %v, len %d), want %v", i, got, back, o.len(), model)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero value", Config{}, ""},
		{"all set", Config{MaxKeys: 10, MaxAge: time.Hour, Monotonic: true, Now: time.Now}, ""},
		{"negative MaxKeys", Config{MaxKeys: -1}, "MaxKeys is -1"},
		{"negative MaxAge", Config{MaxAge: -time.Second}, "MaxAge is -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if dup, _ := f.Seen("s", "i", "k", "1"); dup {
					t.Fatal("first event reported as duplicate")
				}
				if dup, _ := f.Seen("s", "i", "k", "1"); !dup {
					t.Fatal("second sight not reported as duplicate")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDefaultMaxKeys(t *testing.T) {
	f, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if f.maxKeys != DefaultMaxKeys {
		t.Errorf("maxKeys = %d, want DefaultMaxKeys", f.maxKeys)
	}
}

func TestKey(t *testing.T) {
	if got, want := Key(src, "00000000016B3748:00000003"), src+" 00000000016B3748:00000003"; got != want {
		t.Errorf("Key = %q, want %q", got, want)
	}
	if Key("/a", "b:c") == Key("/a:b", "c") || Key("/a", "bc") == Key("/ab", "c") {
		t.Error("Key is ambiguous for sources without spaces")
	}
}

func TestDuplicatesDoNotAllocate(t *testing.T) {
	f, err := New(Config{Monotonic: true})
	if err != nil {
		t.Fatal(err)
	}
	f.Seen(src, "A:2", "k", "A:2")
	f.Seen(src, "A:3", "k", "A:3")
	allocs := testing.AllocsPerRun(100, func() {
		f.Seen(src, "A:2", "k", "A:2")
		f.Seen(src, "A:1", "k", "A:1")
	})
	if allocs != 0 {
		t.Errorf("%v allocations per duplicate check, want 0", allocs)
	}
}
