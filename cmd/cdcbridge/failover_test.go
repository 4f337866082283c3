package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// Two bridges on one Postgres slot: the active one dies or is cut off from
// the database under load, and the standby takes over.

const pgLeader = 3 * time.Second // CDCBRIDGE_LEASE_DURATION: the lock session's idle timeout

// roleOf reads the source's role from /status ("" when it does not answer).
func roleOf(b *bridge) string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + b.addr + "/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		Source struct {
			Role string `json:"role"`
		} `json:"source"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return ""
	}
	return st.Source.Role
}

// delivered reads cdcbridge_events_delivered_total (-1 when it does not
// answer).
func delivered(b *bridge) float64 {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + b.addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		body.Write(buf[:n])
		if err != nil {
			break
		}
	}
	sum := 0.0
	for _, line := range strings.Split(body.String(), "\n") {
		if strings.HasPrefix(line, "cdcbridge_events_delivered_total") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

func waitRole(t *testing.T, b *bridge, role string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for roleOf(b) != role {
		if time.Now().After(deadline) {
			t.Fatalf("role %q after %v, want %q\n%s", roleOf(b), timeout, role, b.log())
		}
		select {
		case err := <-b.exited:
			b.exited <- err
			t.Fatalf("bridge exited: %v\n%s", err, b.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type pgFailover struct {
	t      *testing.T
	ctx    context.Context
	db     *pgx.Conn
	url    string
	stream string
	kin    *testenv.Kinesis
	env    func(name, url string) []string
	rows   int
	writes int
	stop   chan struct{}
	done   chan error
}

func newPGFailover(t *testing.T, ctx context.Context) *pgFailover {
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	dbName, stream, slot := testenv.UniqueName("failover"), testenv.UniqueName("failover"), testenv.UniqueName("failover")
	if err := pg.CreateDatabase(ctx, dbName); err != nil {
		t.Fatal(err)
	}
	if err := kin.CreateStream(ctx, stream, 2); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, pg.URL(dbName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	f := &pgFailover{t: t, ctx: ctx, db: db, url: pg.URL(dbName), stream: stream, kin: kin, rows: 20}
	mustExec(t, db, `CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`,
		fmt.Sprintf(`INSERT INTO items SELECT g, 0 FROM generate_series(1, %d) g`, f.rows))
	work := t.TempDir()
	f.env = func(name, url string) []string {
		return []string{
			"CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_POSTGRES_URL=" + url, "CDCBRIDGE_POSTGRES_SLOT=" + slot,
			"CDCBRIDGE_POSTGRES_PUBLICATION=" + slot, "CDCBRIDGE_KINESIS_STREAM=" + stream,
			"CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(work, name, "cp.json"), "CDCBRIDGE_DLQ_DIR=" + filepath.Join(work, name, "dlq"),
			"CDCBRIDGE_LEASE_DURATION=" + pgLeader.String(), "CDCBRIDGE_KINESIS_REQUEST_TIMEOUT=2s",
			"AWS_ENDPOINT_URL_KINESIS=" + kin.Endpoint, "CDCBRIDGE_SHUTDOWN_TIMEOUT=10s",
		}
	}
	return f
}

// load updates the rows round robin, one transaction every 5ms, each
// setting v to the row's next version.
func (f *pgFailover) load() {
	f.stop, f.done = make(chan struct{}), make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-f.stop:
				f.done <- nil
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := f.db.Exec(f.ctx, `UPDATE items SET v = v + 1 WHERE id = $1`, i%f.rows+1); err != nil {
				f.done <- err
				return
			}
			f.writes++
		}
	}()
}

// check stops the load and verifies the stream: every change once at
// least, first occurrences in order, each row's versions 1, 2, ... in order.
func (f *pgFailover) check(b *bridge) {
	t := f.t
	close(f.stop)
	if err := <-f.done; err != nil {
		t.Fatal(err)
	}
	want := f.rows + f.writes // the snapshot's rows and every update
	recs := waitForRecords(t, f.ctx, f.kin, f.stream, want, b)
	rep, first := verify.Check(recs)
	if rep.Invalid > 0 || len(rep.OrderViolations) > 0 || len(rep.DuplicateDiffer) > 0 || len(first) != want {
		t.Errorf("stream check: %d distinct events, want %d; %+v", len(first), want, rep)
	}
	next := map[string]int{}
	for _, r := range recs {
		e := r.Event
		if e == nil || first[e.Source+" "+e.ID] != e || e.Op.String() != "update" {
			continue
		}
		next[e.PartitionKey]++
		if w := fmt.Sprintf(`"v": %d`, next[e.PartitionKey]); !strings.Contains(string(e.After), w) && !strings.Contains(string(e.After), strings.ReplaceAll(w, " ", "")) {
			t.Errorf("row %s: event %s has %s, want v=%d", e.PartitionKey, e.ID, e.After, next[e.PartitionKey])
			break
		}
	}
	t.Logf("%d changes, %d records on the stream (%d duplicates)", want, rep.Records, rep.Duplicates)
}

// TestPostgresFailoverKill kills the active bridge under load: the standby
// takes over and nothing is lost.
func TestPostgresFailoverKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newPGFailover(t, ctx)
	a := startBridge(t, f.env("a", f.url))
	a.waitReady(60 * time.Second)
	waitRole(t, a, "active", 30*time.Second)
	a.waitMetric("cdcbridge_events_delivered_total", float64(f.rows), 60*time.Second) // the snapshot
	b := startBridge(t, f.env("b", f.url))
	b.waitReady(60 * time.Second)
	waitRole(t, b, "standby", 30*time.Second)

	f.load()
	time.Sleep(2 * time.Second)
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
	killed := time.Now()
	before := delivered(b)
	waitRole(t, b, "active", 30*time.Second)
	active := time.Since(killed)
	for delivered(b) <= before {
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("the standby delivered nothing after taking over\n%s", b.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("takeover after kill -9: standby active after %v, delivering after %v (LEASE_DURATION %v)",
		active.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond), pgLeader)
	time.Sleep(time.Second)
	f.check(b)
	if err, _ := b.stop(30 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v\n%s", err, b.log())
	}
}

// TestPostgresFailoverCutOff cuts the active bridge off from the database
// (it keeps running and reaching Kinesis): it stops sending at once, the
// server ends its lock session after LEASE_DURATION of silence, the
// standby takes over, and the cut-off bridge sends nothing after that.
func TestPostgresFailoverCutOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newPGFailover(t, ctx)
	u, err := url.Parse(f.url)
	if err != nil {
		t.Fatal(err)
	}
	pgProxy := newTCPProxy(t, u.Host)
	u.Host = pgProxy.Addr()
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	viaProxy := u.String()
	kinProxy := newPutRecorder(t, f.kin.Endpoint)
	envA := f.env("a", viaProxy)
	for i, kv := range envA {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL_KINESIS=") {
			envA[i] = "AWS_ENDPOINT_URL_KINESIS=" + kinProxy.URL
		}
	}
	a := startBridge(t, envA)
	a.waitReady(60 * time.Second)
	waitRole(t, a, "active", 30*time.Second)
	a.waitMetric("cdcbridge_events_delivered_total", float64(f.rows), 60*time.Second)
	b := startBridge(t, f.env("b", f.url))
	b.waitReady(60 * time.Second)
	waitRole(t, b, "standby", 30*time.Second)

	f.load()
	time.Sleep(2 * time.Second)
	pgProxy.Freeze()
	cut := time.Now()
	before := delivered(b)
	waitRole(t, b, "active", 60*time.Second)
	active := time.Since(cut)
	for delivered(b) <= before {
		if time.Since(cut) > 60*time.Second {
			t.Fatalf("the standby delivered nothing after taking over\n%s", b.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	streaming := time.Now()
	t.Logf("takeover from a leader cut off from the database: standby active after %v, delivering after %v (LEASE_DURATION %v)",
		active.Round(10*time.Millisecond), streaming.Sub(cut).Round(10*time.Millisecond), pgLeader)
	if !strings.Contains(a.log(), "stopping at once") {
		t.Errorf("the cut-off leader did not report losing the lock:\n%s", a.log())
	}
	// Its walsender lingers on the server (its socket is still open); the
	// new leader ends it rather than waiting for wal_sender_timeout.
	if !strings.Contains(b.log(), "ended the previous leader's walsender") {
		t.Errorf("the new leader did not end the old walsender:\n%s", b.log())
	}
	time.Sleep(time.Second)
	f.check(b)
	if last := kinProxy.last(); last.After(streaming) {
		t.Errorf("the cut-off leader sent records to Kinesis %v after the standby started delivering", last.Sub(streaming))
	}
	pgProxy.Thaw()
	// Reconnected, the old leader is a standby, or it stopped because
	// changes of its lost leadership were stuck in its sink.
	select {
	case err := <-a.exited:
		a.exited <- err
		if !strings.Contains(a.log(), "stuck in the sink") {
			t.Errorf("the old leader exited (%v) without saying why\n%s", err, a.log())
		}
		t.Logf("the old leader stopped: changes of its lost leadership were fenced in its sink")
	case <-time.After(2 * pgLeader):
		waitRole(t, a, "standby", 30*time.Second)
		t.Logf("the old leader is a standby again")
		if err, _ := a.stop(30 * time.Second); err != nil {
			t.Errorf("SIGTERM a: %v\n%s", err, a.log())
		}
	}
	if err, _ := b.stop(30 * time.Second); err != nil {
		t.Errorf("SIGTERM b: %v\n%s", err, b.log())
	}
}

// putRecorder is a reverse proxy to Kinesis that notes when the last
// PutRecords request arrived.
type putRecorder struct {
	*httptest.Server
	mu sync.Mutex
	at time.Time
}

func newPutRecorder(t *testing.T, target string) *putRecorder {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &putRecorder{}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".PutRecords") {
			p.mu.Lock()
			p.at = time.Now()
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *putRecorder) last() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.at
}
