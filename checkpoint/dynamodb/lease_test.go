package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

func leasesT(t *testing.T, s *Store, owner string) *Leases {
	t.Helper()
	l, err := NewLeases(s, owner)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func findLease(t *testing.T, l *Leases, scope, key string) checkpoint.Lease {
	t.Helper()
	all, err := l.List(context.Background(), scope)
	if err != nil {
		t.Fatal(err)
	}
	for _, le := range all {
		if le.Key == key {
			return le
		}
	}
	t.Fatalf("no item %s in scope %s: %+v", key, scope, all)
	return checkpoint.Lease{}
}

// TestLeaseLifecycle: register, take, renew, checkpoint, steal, the old
// owner's renewal and checkpoint refused, release, and take of the
// released lease with the checkpoint kept.
func TestLeaseLifecycle(t *testing.T) {
	ctx := context.Background()
	s, _ := openT(t)
	a, b := leasesT(t, s, "a"), leasesT(t, s, "b")
	const scope = "dynamodb/stream"
	key := scope + "/shard-2"

	if err := a.Register(ctx, key, "shard-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, key, "other"); err != nil { // a second register changes nothing
		t.Fatal(err)
	}
	seen := findLease(t, a, scope, key)
	if seen.Owner != "" || seen.Counter != 0 || seen.Parent != "shard-1" || seen.HasCheckpoint {
		t.Fatalf("registered item %+v, want free, counter 0, parent shard-1, no checkpoint", seen)
	}
	// A registered lease-only item is not a checkpoint.
	if _, err := s.Load(ctx, key); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load of a lease-only item: %v, want ErrNotFound", err)
	}

	held, err := a.Take(ctx, seen, 10*time.Second)
	if err != nil {
		t.Fatalf("Take of a free lease: %v", err)
	}
	if held.Owner != "a" || held.Counter != 1 || held.Parent != "shard-1" || held.ExpiresAt.Before(time.Now()) {
		t.Fatalf("taken lease %+v", held)
	}
	// b read it before a took it: its take fails.
	if _, err := b.Take(ctx, seen, 10*time.Second); !errors.Is(err, checkpoint.ErrLeaseChanged) {
		t.Fatalf("Take with a stale counter: %v, want checkpoint.ErrLeaseChanged", err)
	}
	if held, err = a.Renew(ctx, held, 10*time.Second); err != nil || held.Counter != 2 {
		t.Fatalf("Renew: %+v, %v", held, err)
	}
	if err := a.Save(ctx, held, checkpoint.Checkpoint{Position: "0100", Data: []byte(`{"x":1}`)}); err != nil {
		t.Fatalf("owner's Save: %v", err)
	}
	if err := b.Save(ctx, held, checkpoint.Checkpoint{Position: "0200"}); !errors.Is(err, checkpoint.ErrLeaseLost) || !errors.Is(err, checkpoint.ErrStale) {
		t.Fatalf("Save by a non-owner: %v, want checkpoint.ErrLeaseLost and ErrStale", err)
	}
	if err := a.Save(ctx, held, checkpoint.Checkpoint{Position: "0050"}); !errors.Is(err, checkpoint.ErrStale) || errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("Save backwards by the owner: %v, want ErrStale only", err)
	}
	// A plain checkpoint save keeps the lease attributes.
	if c, err := s.Load(ctx, key); err != nil || c.Position != "0100" || string(c.Data) != `{"x":1}` {
		t.Fatalf("Load: %+v, %v", c, err)
	}

	// b steals the lease it now sees.
	seen = findLease(t, b, scope, key)
	stolen, err := b.Take(ctx, seen, 10*time.Second)
	if err != nil {
		t.Fatalf("steal: %v", err)
	}
	if stolen.Owner != "b" || stolen.Counter != 3 || stolen.Checkpoint.Position != "0100" || !stolen.HasCheckpoint {
		t.Fatalf("stolen lease %+v, want owner b, counter 3 and the checkpoint", stolen)
	}
	if _, err := a.Renew(ctx, held, 10*time.Second); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("old owner's Renew: %v, want checkpoint.ErrLeaseLost", err)
	}
	if err := a.Save(ctx, held, checkpoint.Checkpoint{Position: "0150"}); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("old owner's Save: %v, want checkpoint.ErrLeaseLost", err)
	}
	if err := a.Release(ctx, held); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("old owner's Release: %v, want checkpoint.ErrLeaseLost", err)
	}

	if err := b.Release(ctx, stolen); err != nil {
		t.Fatalf("Release: %v", err)
	}
	free := findLease(t, a, scope, key)
	if free.Owner != "" || free.Counter != 4 || free.Checkpoint.Position != "0100" || !free.ExpiresAt.IsZero() {
		t.Fatalf("released lease %+v, want free at counter 4 with its checkpoint", free)
	}
	if err := b.Save(ctx, stolen, checkpoint.Checkpoint{Position: "0300"}); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("Save after Release: %v, want checkpoint.ErrLeaseLost", err)
	}
	again, err := a.Take(ctx, free, 10*time.Second)
	if err != nil || again.Owner != "a" || again.Counter != 5 {
		t.Fatalf("Take of the released lease: %+v, %v", again, err)
	}
}

// TestLeaseTakeRace: several owners race for the same leases; each lease
// goes to exactly one of them.
func TestLeaseTakeRace(t *testing.T) {
	ctx := context.Background()
	s, _ := openT(t)
	const scope, keys, owners = "dynamodb/race", 8, 6
	for i := range keys {
		if err := leasesT(t, s, "setup").Register(ctx, fmt.Sprintf("%s/shard-%d", scope, i), ""); err != nil {
			t.Fatal(err)
		}
	}
	seen, err := leasesT(t, s, "reader").List(ctx, scope)
	if err != nil || len(seen) != keys {
		t.Fatalf("List: %d items, %v", len(seen), err)
	}
	wins := make([][]string, owners)
	var wg sync.WaitGroup
	for o := range owners {
		l := leasesT(t, s, fmt.Sprintf("owner-%d", o))
		wg.Go(func() {
			for _, le := range seen {
				got, err := l.Take(ctx, le, 10*time.Second)
				switch {
				case err == nil:
					wins[o] = append(wins[o], got.Key)
				case !errors.Is(err, checkpoint.ErrLeaseChanged):
					t.Errorf("owner %d: %v", o, err)
				}
			}
		})
	}
	wg.Wait()
	won := map[string]int{}
	for _, w := range wins {
		for _, k := range w {
			won[k]++
		}
	}
	for _, le := range seen {
		if won[le.Key] != 1 {
			t.Errorf("%s taken %d times, want once", le.Key, won[le.Key])
		}
	}
	after, _ := leasesT(t, s, "reader").List(ctx, scope)
	for _, le := range after {
		if le.Counter != 1 || le.Owner == "" {
			t.Errorf("after the race %+v, want one owner at counter 1", le)
		}
	}
}

func TestLeaseClaim(t *testing.T) {
	ctx := context.Background()
	s, _ := openT(t)
	a, b := leasesT(t, s, "a"), leasesT(t, s, "b")
	key := "dynamodb/stream/~discovery"
	if ok, err := a.Claim(ctx, key, time.Hour); !ok || err != nil {
		t.Fatalf("first claim: %v, %v", ok, err)
	}
	if ok, err := b.Claim(ctx, key, time.Hour); ok || err != nil {
		t.Fatalf("second claim within the period: %v, %v; want refused", ok, err)
	}
	if ok, err := b.Claim(ctx, key, time.Millisecond); err != nil || !ok {
		// Claims a millisecond apart may share a timestamp: retry once.
		time.Sleep(5 * time.Millisecond)
		if ok, err = b.Claim(ctx, key, time.Millisecond); !ok || err != nil {
			t.Fatalf("claim after the period: %v, %v", ok, err)
		}
	}
	// A claim item is not listed as a checkpoint key.
	keys, err := s.Keys(ctx, "dynamodb/stream")
	if err != nil || len(keys) != 0 {
		t.Fatalf("Keys: %v, %v; want none", keys, err)
	}
}
