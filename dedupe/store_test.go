package dedupe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv("DEDUPE_CLAIM_HELPER") != "" {
		os.Exit(claimHelper())
	}
	os.Exit(testenv.Main(m))
}

// clock is a test clock that moves only when told.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func ddbClient(endpoint string) *dynamodb.Client {
	return dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

func newTestStore(t *testing.T, table string, cfg StoreConfig) *Store {
	t.Helper()
	cfg.Table = table
	s, err := NewStore(ddbClient(testenv.DynamoDB(t).Endpoint), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func claim(t *testing.T, s *Store, e Event) Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), e)
	if err != nil {
		t.Fatalf("Claim %s: %v", e.ID, err)
	}
	return c
}

const testSource = "/cdcbridge/postgres/1/db/slot"

func TestStoreClaimConfirmRelease(t *testing.T) {
	ctx := context.Background()
	table := testenv.UniqueName("dedupe")
	a := newTestStore(t, table, StoreConfig{Owner: "a"})
	b := newTestStore(t, table, StoreConfig{Owner: "b"})
	e := Event{Source: testSource, ID: "0000000000000001:00000001"}

	ca := claim(t, a, e)
	if ca.Outcome != Claimed {
		t.Fatalf("first claim: %v, want claimed", ca.Outcome)
	}
	if cb := claim(t, b, e); cb.Outcome != InProgress || cb.Holder != "a" {
		t.Fatalf("claim while a holds it: %v by %q, want in progress by a", cb.Outcome, cb.Holder)
	}
	// a fails to process it and lets it go: b may take it at once.
	if err := a.Release(ctx, ca); err != nil {
		t.Fatal(err)
	}
	cb := claim(t, b, e)
	if cb.Outcome != Claimed {
		t.Fatalf("claim after release: %v, want claimed", cb.Outcome)
	}
	if err := a.Confirm(ctx, ca); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("Confirm of a released claim: %v, want ErrClaimLost", err)
	}
	if err := b.Confirm(ctx, cb); err != nil {
		t.Fatal(err)
	}
	if c := claim(t, a, e); c.Outcome != Done || c.Holder != "b" {
		t.Fatalf("claim of a confirmed key: %v by %q, want done by b", c.Outcome, c.Holder)
	}
	// The same id from another source is another event.
	if c := claim(t, a, Event{Source: testSource + "x", ID: e.ID}); c.Outcome != Claimed {
		t.Fatalf("same id, other source: %v, want claimed", c.Outcome)
	}
	if _, err := a.Claim(ctx, Event{ID: "x"}); err == nil {
		t.Error("Claim without a source succeeded")
	}
	if err := a.Confirm(ctx, Claim{Outcome: Done, Event: e}); err == nil {
		t.Error("Confirm of an unclaimed outcome succeeded")
	}
}

// A consumer that crashes mid-work does not lose the event: its claim
// expires and another consumer claims it; the late Confirm of the first is
// refused. A confirmed key is forgotten after TTL.
func TestStoreClaimExpires(t *testing.T) {
	ctx := context.Background()
	table := testenv.UniqueName("dedupe")
	var clk clock
	cfg := StoreConfig{ClaimTimeout: time.Minute, TTL: time.Hour, Now: clk.now}
	cfg.Owner = "crashing"
	a := newTestStore(t, table, cfg)
	cfg.Owner = "survivor"
	b := newTestStore(t, table, cfg)
	e := Event{Source: testSource, ID: "0000000000000002:00000001"}

	ca := claim(t, a, e)
	clk.advance(30 * time.Second)
	if c := claim(t, b, e); c.Outcome != InProgress {
		t.Fatalf("claim within the claim timeout: %v, want in progress", c.Outcome)
	}
	clk.advance(31 * time.Second)
	cb := claim(t, b, e)
	if cb.Outcome != Claimed {
		t.Fatalf("claim after the first claim expired: %v, want claimed", cb.Outcome)
	}
	if err := a.Confirm(ctx, ca); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("late Confirm of an expired claim: %v, want ErrClaimLost", err)
	}
	if err := a.Release(ctx, ca); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("late Release of an expired claim: %v, want ErrClaimLost", err)
	}
	if err := b.Confirm(ctx, cb); err != nil {
		t.Fatal(err)
	}
	clk.advance(59 * time.Minute)
	if c := claim(t, a, e); c.Outcome != Done {
		t.Fatalf("claim within TTL: %v, want done", c.Outcome)
	}
	clk.advance(2 * time.Minute)
	if c := claim(t, a, e); c.Outcome != Claimed {
		t.Fatalf("claim after TTL: %v, want claimed (the key is forgotten)", c.Outcome)
	}
}

// With Monotonic, an event at or below its partition key's last confirmed
// sequence is refused, whatever its id.
func TestStoreMonotonic(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, testenv.UniqueName("dedupe"), StoreConfig{Monotonic: true})
	ev := func(n int) Event {
		seq := fmt.Sprintf("%016X:00000001", n)
		return Event{Source: testSource, ID: seq, PartitionKey: "public.orders:[42]", Sequence: seq}
	}
	for _, n := range []int{5, 7} {
		c := claim(t, s, ev(n))
		if c.Outcome != Claimed {
			t.Fatalf("event %d: %v", n, c.Outcome)
		}
		if err := s.Confirm(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if c := claim(t, s, ev(6)); c.Outcome != Stale {
		t.Fatalf("older change after a newer one: %v, want stale", c.Outcome)
	}
	if c := claim(t, s, ev(7)); c.Outcome != Stale && c.Outcome != Done {
		t.Fatalf("repeat of the last change: %v, want stale or done", c.Outcome)
	}
	if c := claim(t, s, ev(8)); c.Outcome != Claimed {
		t.Fatalf("newer change: %v, want claimed", c.Outcome)
	}
	other := ev(1)
	other.PartitionKey = "public.orders:[43]"
	if c := claim(t, s, other); c.Outcome != Claimed {
		t.Fatalf("another row's old sequence: %v, want claimed", c.Outcome)
	}
}

// Several goroutines, each with its own Store, and several processes claim
// the same keys at once: exactly one claim wins per key.
func TestStoreConcurrentClaims(t *testing.T) {
	d := testenv.DynamoDB(t)
	table := testenv.UniqueName("dedupe")
	newTestStore(t, table, StoreConfig{}) // creates the table
	const keys, goroutines, processes = 150, 6, 3
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("%016X:00000001", i)
	}

	var mu sync.Mutex
	wins := map[string][]string{}
	var wg sync.WaitGroup
	for g := range goroutines {
		s, err := NewStore(ddbClient(d.Endpoint), StoreConfig{Table: table, Owner: fmt.Sprintf("goroutine-%d", g)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for _, id := range ids {
				c, err := s.Claim(context.Background(), Event{Source: testSource, ID: id})
				if err != nil {
					t.Error(err)
					return
				}
				if c.Outcome == Claimed {
					mu.Lock()
					wins[id] = append(wins[id], fmt.Sprintf("goroutine-%d", g))
					mu.Unlock()
				}
			}
		})
	}
	type result struct {
		out []byte
		err error
	}
	results := make(chan result, processes)
	for p := range processes {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "DEDUPE_CLAIM_HELPER=1", "DEDUPE_ENDPOINT="+d.Endpoint, "DEDUPE_TABLE="+table,
			"DEDUPE_OWNER="+fmt.Sprintf("process-%d", p), "DEDUPE_IDS="+strings.Join(ids, ","))
		go func() {
			out, err := cmd.CombinedOutput()
			results <- result{out, err}
		}()
	}
	wg.Wait()
	for range processes {
		r := <-results
		if r.err != nil {
			t.Fatalf("claiming process: %v\n%s", r.err, r.out)
		}
		sc := bufio.NewScanner(bytes.NewReader(r.out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "won" {
				wins[f[2]] = append(wins[f[2]], f[1])
			}
		}
	}
	winners := map[string]int{}
	for _, id := range ids {
		if len(wins[id]) != 1 {
			t.Errorf("key %s claimed by %v, want exactly one", id, wins[id])
			continue
		}
		winners[strings.Split(wins[id][0], "-")[0]]++
	}
	t.Logf("claims won: %v", winners)
}

// claimHelper is a separate claiming process of TestStoreConcurrentClaims.
func claimHelper() int {
	s, err := NewStore(ddbClient(os.Getenv("DEDUPE_ENDPOINT")), StoreConfig{Table: os.Getenv("DEDUPE_TABLE"), Owner: os.Getenv("DEDUPE_OWNER")})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for _, id := range strings.Split(os.Getenv("DEDUPE_IDS"), ",") {
		c, err := s.Claim(context.Background(), Event{Source: testSource, ID: id})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		if c.Outcome == Claimed {
			fmt.Println("won", os.Getenv("DEDUPE_OWNER"), id)
		}
	}
	return 0
}
