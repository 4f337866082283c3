package fence

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// server answers after delay (or when the request is cancelled) and counts
// the requests that reached it.
type server struct {
	*httptest.Server
	hits  atomic.Int32
	delay time.Duration
}

func newServer(t *testing.T, delay time.Duration) *server {
	s := &server{delay: delay}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a cancelled request only once the body is read
		s.hits.Add(1)
		select {
		case <-time.After(s.delay):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, `{"FailedRecordCount":0,"Records":[]}`)
	}))
	t.Cleanup(s.Close)
	return s
}

func put(t *testing.T, c Doer, url, target string) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", target)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	return err
}

const putRecords = "Kinesis_20131202.PutRecords"

func TestGateRefusesAfterBusyHoldRanOut(t *testing.T) {
	srv := newServer(t, 0)
	g := New(10 * time.Millisecond)
	c := g.Client(srv.Client(), PutRecords)
	var busy atomic.Bool
	busy.Store(true)
	h := g.Hold("shard-1", time.Now().Add(-time.Second), busy.Load)

	if err := put(t, c, srv.URL, putRecords); !errors.Is(err, ErrFenced) {
		t.Fatalf("put with a busy hold past its time: %v, want ErrFenced", err)
	}
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("a refused attempt reached the server (%d hits)", n)
	}
	if !h.Stuck() || len(g.Blocked()) != 1 {
		t.Fatalf("Stuck %v, Blocked %v: want the hold reported", h.Stuck(), g.Blocked())
	}
	// Other operations pass: only record-carrying requests are fenced.
	if err := put(t, c, srv.URL, "Kinesis_20131202.ListShards"); err != nil {
		t.Fatalf("ListShards through a closed gate: %v", err)
	}
	// The partition's records were accepted: the gate opens.
	busy.Store(false)
	if err := put(t, c, srv.URL, putRecords); err != nil {
		t.Fatalf("put with an idle hold: %v", err)
	}
	// Renewed: busy again but within its time.
	busy.Store(true)
	h.Extend(time.Now().Add(time.Minute))
	if err := put(t, c, srv.URL, putRecords); err != nil {
		t.Fatalf("put after Extend: %v", err)
	}
	if h.Stuck() {
		t.Fatal("an extended hold reports stuck")
	}
	h.Close()
	if _, ok := g.Deadline(); ok {
		t.Fatal("deadline after the only hold closed")
	}
}

func TestGateCutsAttemptAtHoldTime(t *testing.T) {
	srv := newServer(t, 10*time.Second)
	g := New(50 * time.Millisecond)
	c := g.Client(srv.Client(), nil)
	g.Hold("shard-1", time.Now().Add(300*time.Millisecond), func() bool { return true })
	g.Hold("shard-2", time.Now().Add(time.Hour), func() bool { return true })
	g.Hold("idle", time.Now().Add(-time.Hour), func() bool { return false })
	start := time.Now()
	err := put(t, c, srv.URL, putRecords)
	took := time.Since(start)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("slow attempt: %v, want ErrFenced", err)
	}
	if took > 2*time.Second {
		t.Fatalf("attempt ran %v, past the earliest busy hold's time", took)
	}
	dl, ok := g.Deadline()
	if !ok || dl.After(start.Add(300*time.Millisecond)) {
		t.Fatalf("deadline %v (ok %v), want at most the hold's time less the margin", dl, ok)
	}
}

func TestRevokeCancelsInFlight(t *testing.T) {
	srv := newServer(t, 10*time.Second)
	g := New(0)
	c := g.Client(srv.Client(), PutRecords)
	h := g.Hold("slot", time.Now().Add(time.Hour), func() bool { return true })
	errc := make(chan error, 1)
	go func() { errc <- put(t, c, srv.URL, putRecords) }()
	deadline := time.Now().Add(5 * time.Second)
	for srv.hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	h.Revoke()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("revoked attempt: %v, want ErrFenced", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Revoke did not end the attempt in flight")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("attempt ended %v after Revoke", took)
	}
	// Extend after Revoke changes nothing.
	h.Extend(time.Now().Add(time.Hour))
	if err := put(t, c, srv.URL, putRecords); !errors.Is(err, ErrFenced) {
		t.Fatalf("put after Revoke: %v, want ErrFenced", err)
	}
}

func TestNilGate(t *testing.T) {
	var g *Gate
	srv := newServer(t, 0)
	c := g.Client(srv.Client(), PutRecords)
	h := g.Hold("x", time.Time{}, func() bool { return true })
	h.Extend(time.Now())
	h.Revoke()
	if h.Stuck() || h.Busy() {
		t.Fatal("nil hold reports state")
	}
	h.Close()
	if err := put(t, c, srv.URL, putRecords); err != nil {
		t.Fatalf("nil gate: %v", err)
	}
}
