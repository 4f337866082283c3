package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// Several cdcbridge processes on one DynamoDB stream, sharing its shards
// through leases in a DynamoDB Local table.

const (
	multiLease   = 4 * time.Second
	multiRequest = 2 * time.Second // CDCBRIDGE_KINESIS_REQUEST_TIMEOUT
)

// leaseView is the lease part of a process's /status.
type leaseView struct {
	Held, Lapsed, Starting int
	Owner                  string
}

// leases reads a process's /status; ok is false when it does not answer.
func leasesOf(b *bridge) (leaseView, bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + b.addr + "/status")
	if err != nil {
		return leaseView{}, false
	}
	defer resp.Body.Close()
	var st struct {
		Source struct {
			Leases *struct {
				Owner    string `json:"owner"`
				Held     int    `json:"held"`
				Lapsed   int    `json:"lapsed"`
				Starting int    `json:"starting"`
			} `json:"leases"`
		} `json:"source"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil || st.Source.Leases == nil {
		return leaseView{}, false
	}
	l := st.Source.Leases
	return leaseView{Held: l.Held, Lapsed: l.Lapsed, Starting: l.Starting, Owner: l.Owner}, true
}

// waitLeaseSpread waits until the processes read n shards between them,
// their counts differing by at most one, and returns how long that took.
func waitLeaseSpread(t *testing.T, n int, timeout time.Duration, bs ...*bridge) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var last []leaseView
	for time.Now().Before(deadline) {
		last = last[:0]
		total, lo, hi, ok := 0, n, 0, true
		for _, b := range bs {
			select {
			case err := <-b.exited:
				b.exited <- err
				t.Fatalf("a bridge exited: %v\n%s", err, b.log())
			default:
			}
			v, up := leasesOf(b)
			last = append(last, v)
			if !up || v.Lapsed > 0 || v.Starting > 0 {
				ok = false
				break
			}
			total += v.Held
			lo, hi = min(lo, v.Held), max(hi, v.Held)
		}
		if ok && total == n && hi-lo <= 1 {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("leases not spread over %d processes after %v: %+v", len(bs), timeout, last)
	return 0
}

// TestMultiProcessDynamoDB runs three bridges on one stream of six shards
// under load: one is killed, another started, one stopped gracefully, and
// one cut off from DynamoDB and Kinesis while it keeps running. Every
// change reaches Kinesis with first occurrences in order per item, no
// shard is read by two processes at once for more than a lease period,
// and the leases end evenly spread.
func TestMultiProcessDynamoDB(t *testing.T) {
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	db := ddb.Client()
	const shards, perShard = 6, 8
	var arns []string
	base := testenv.UniqueName("multi")
	for i := range shards {
		out, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:            aws.String(fmt.Sprintf("%s_%d", base, i)),
			AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
			KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
			BillingMode:          types.BillingModePayPerRequest,
			StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
		})
		if err != nil {
			t.Fatal(err)
		}
		arns = append(arns, aws.ToString(out.TableDescription.LatestStreamArn))
	}
	stream := testenv.UniqueName("multi")
	if err := kin.CreateStream(ctx, stream, 4); err != nil {
		t.Fatal(err)
	}
	mux := newStreamMux(t, ddb.Endpoint, arns)

	// Items live in one table each, so their changes stay on one shard.
	var wmu sync.Mutex
	version := map[int]int{}
	writes := 0
	put := func(item int) error {
		wmu.Lock()
		version[item]++
		v := version[item]
		wmu.Unlock()
		_, err := db.PutItem(ctx, &dynamodb.PutItemInput{
			TableName: aws.String(fmt.Sprintf("%s_%d", base, item%shards)),
			Item: map[string]types.AttributeValue{
				"pk": &types.AttributeValueMemberS{Value: "item-" + strconv.Itoa(item)},
				"v":  &types.AttributeValueMemberN{Value: strconv.Itoa(v)},
			},
		})
		if err == nil {
			wmu.Lock()
			writes++
			wmu.Unlock()
		}
		return err
	}
	for i := range shards * perShard {
		if err := put(i); err != nil {
			t.Fatal(err)
		}
	}

	leaseTable := testenv.UniqueName("leases")
	work := t.TempDir()
	env := func(name, ddbURL, streamsURL, kinesisURL string) []string {
		return []string{
			"CDCBRIDGE_SOURCE=dynamodb", "CDCBRIDGE_DYNAMODB_STREAM_ARN=" + arns[0], "CDCBRIDGE_KINESIS_STREAM=" + stream,
			"CDCBRIDGE_CHECKPOINT_STORE=dynamodb://" + leaseTable, "CDCBRIDGE_DLQ_DIR=" + filepath.Join(work, name),
			"CDCBRIDGE_LEASE_DURATION=" + multiLease.String(), "CDCBRIDGE_KINESIS_REQUEST_TIMEOUT=" + multiRequest.String(),
			"CDCBRIDGE_DYNAMODB_IDLE_POLL=100ms", "CDCBRIDGE_SHUTDOWN_TIMEOUT=10s", "CDCBRIDGE_LOG_LEVEL=info",
			"AWS_ENDPOINT_URL_DYNAMODB=" + ddbURL, "AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" + streamsURL, "AWS_ENDPOINT_URL_KINESIS=" + kinesisURL,
		}
	}
	direct := func(name string) []string { return env(name, ddb.Endpoint, mux.listen(name), kin.Endpoint) }

	p1 := startBridge(t, direct("p1"))
	p1.waitReady(60 * time.Second)
	p2 := startBridge(t, direct("p2"))
	// p3 reaches everything through proxies that can cut it off.
	ddbProxy := newTCPProxy(t, strings.TrimPrefix(ddb.Endpoint, "http://"))
	streamsProxy := newTCPProxy(t, strings.TrimPrefix(mux.listen("p3"), "http://"))
	kinProxy := newTCPProxy(t, strings.TrimPrefix(kin.Endpoint, "http://"))
	p3 := startBridge(t, env("p3", ddbProxy.URL(), streamsProxy.URL(), kinProxy.URL()))
	for _, b := range []*bridge{p2, p3} {
		b.waitReady(60 * time.Second)
	}
	took := waitLeaseSpread(t, shards, 90*time.Second, p1, p2, p3)
	t.Logf("three processes spread the leases %v after they were ready", took.Round(100*time.Millisecond))

	// Load: a change every 10ms, round robin over the items.
	stopLoad := make(chan struct{})
	loadDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				loadDone <- nil
				return
			case <-time.After(10 * time.Millisecond):
			}
			if err := put(i % (shards * perShard)); err != nil {
				loadDone <- err
				return
			}
		}
	}()

	// kill -9 p1: its leases expire and p2 and p3 take them over.
	time.Sleep(time.Second)
	_ = p1.cmd.Process.Signal(syscall.SIGKILL)
	<-p1.exited
	killed := time.Now()
	took = waitLeaseSpread(t, shards, 60*time.Second, p2, p3)
	t.Logf("lease failover after kill -9: shards read again %v after the kill (lease %v, request timeout %v)",
		time.Since(killed).Round(100*time.Millisecond), multiLease, multiRequest)

	// A new process steals its share, one lease at a time.
	p4 := startBridge(t, direct("p4"))
	p4.waitReady(60 * time.Second)
	took = waitLeaseSpread(t, shards, 90*time.Second, p2, p3, p4)
	t.Logf("a fourth process got its share in %v", took.Round(100*time.Millisecond))

	// p2 stops gracefully: it hands its leases back.
	if err, _ := p2.stop(30 * time.Second); err != nil {
		t.Fatalf("p2 SIGTERM: %v\n%s", err, p2.log())
	}
	if !strings.Contains(p2.log(), "shard lease released") {
		t.Errorf("p2 released no lease on shutdown:\n%s", p2.log())
	}
	took = waitLeaseSpread(t, shards, 60*time.Second, p3, p4)
	t.Logf("after a graceful stop, the others read its shards within %v", took.Round(100*time.Millisecond))

	// p3 is cut off from DynamoDB, its stream and Kinesis, and keeps running.
	for _, p := range []*tcpProxy{ddbProxy, streamsProxy, kinProxy} {
		p.Freeze()
	}
	cut := time.Now()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v, ok := leasesOf(p4); ok && v.Held == shards && v.Starting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("p4 did not take over the cut-off process's shards\n%s", p4.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("lease failover from a cut-off process: p4 reads every shard %v after the cut", time.Since(cut).Round(100*time.Millisecond))
	select {
	case err := <-p3.exited:
		t.Fatalf("the cut-off process exited while it could not tell whether its leases moved: %v\n%s", err, p3.log())
	default:
	}
	v3, ok := leasesOf(p3)
	if !ok || v3.Held != 0 {
		t.Errorf("cut-off p3 status: %+v (answered %v); want no lease held or read", v3, ok)
	}

	// Reconnected, p3 learns its leases are gone. If records of them were
	// still waiting for Kinesis it must stop (they may never be sent now);
	// otherwise it rejoins. A stopped process is restarted, as an
	// orchestrator would.
	for _, p := range []*tcpProxy{ddbProxy, streamsProxy, kinProxy} {
		p.Thaw()
	}
	live := []*bridge{p3, p4}
	select {
	case err := <-p3.exited:
		if !strings.Contains(p3.log(), "stuck in the sink") {
			t.Fatalf("p3 exited (%v) without saying its records were fenced\n%s", err, p3.log())
		}
		t.Logf("p3 stopped: records of its lost leases were fenced")
		p5 := startBridge(t, direct("p5"))
		p5.waitReady(60 * time.Second)
		live = []*bridge{p4, p5}
	case <-time.After(5 * multiLease):
		t.Logf("p3 rejoined: nothing of its lost leases was left in flight")
	}
	took = waitLeaseSpread(t, shards, 120*time.Second, live...)
	t.Logf("shares even again %v after reconnecting", took.Round(100*time.Millisecond))

	close(stopLoad)
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	wmu.Lock()
	want := writes
	wmu.Unlock()
	recs := waitForRecords(t, ctx, kin, stream, want, live[len(live)-1])
	rep, first := verify.Check(recs)
	if rep.Invalid > 0 || len(rep.OrderViolations) > 0 || len(rep.DuplicateDiffer) > 0 || len(first) != want {
		t.Errorf("stream check: %d distinct events, want %d; %+v", len(first), want, rep)
	}
	// First occurrences carry each item's versions 1, 2, ... in order.
	next := map[string]int{}
	for _, r := range recs {
		e := r.Event
		if e == nil || first[e.Source+" "+e.ID] != e {
			continue
		}
		next[e.PartitionKey]++
		if w := fmt.Sprintf(`"v":%d`, next[e.PartitionKey]); !strings.Contains(string(e.After), w) {
			t.Errorf("item %s: event %s has %s, want %s", e.PartitionKey, e.ID, e.After, w)
			break
		}
	}
	if worst, what := maxOverlap(mux.readIntervals(500 * time.Millisecond)); worst > multiLease {
		t.Errorf("a shard was read by two processes at once for %v (%s), longer than a lease", worst, what)
	} else {
		t.Logf("longest time two processes read one shard at once: %v", worst)
	}
	for _, b := range live {
		if err, _ := b.stop(30 * time.Second); err != nil {
			t.Errorf("SIGTERM: %v\n%s", err, b.log())
		}
	}
	t.Logf("%d changes, %d records on the stream (%d duplicates)", want, rep.Records, rep.Duplicates)
}
