package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestDLQReplay: a row over the stream's limit goes to the dead-letter
// directory with a placeholder on the stream; once the limit is raised,
// `cdcbridge dlq replay` sends it with its id, sequence and replayed=true,
// and removes the file.
func TestDLQReplay(t *testing.T) {
	pg := testenv.PG(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dbName, stream := testenv.UniqueName("dlq"), testenv.UniqueName("dlq")
	if err := pg.CreateDatabase(ctx, dbName); err != nil {
		t.Fatal(err)
	}
	fake := kinesisfake.New(kinesisfake.Options{StreamName: stream, Shards: 2, Keep: true})
	defer fake.Close()
	small := int32(1)
	fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &small})

	db, err := pgx.Connect(ctx, pg.URL(dbName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	mustExec(t, db, `CREATE TABLE docs (id int PRIMARY KEY, body text)`)

	work := t.TempDir()
	dlqDir := filepath.Join(work, "dlq")
	slot := testenv.UniqueName("slot")
	env := []string{
		"CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_POSTGRES_URL=" + pg.URL(dbName), "CDCBRIDGE_POSTGRES_SLOT=" + slot, "CDCBRIDGE_KINESIS_STREAM=" + stream,
		"CDCBRIDGE_POSTGRES_SNAPSHOT=never", // the rows below are streamed, not read as well by a snapshot
		"CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(work, "cp.json"), "CDCBRIDGE_DLQ_DIR=" + dlqDir,
		"AWS_ENDPOINT_URL_KINESIS=" + fake.URL,
	}
	b := startBridge(t, env)
	b.waitReady(60 * time.Second)
	// Ready comes before the slot is created: changes before its
	// consistent point are not streamed.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var created bool
		if err := db.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL`, slot).Scan(&created); err != nil {
			t.Fatal(err)
		}
		if created {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s not created after 60s\n%s", slot, b.log())
		}
	}
	mustExec(t, db, `INSERT INTO docs VALUES (1, 'small'), (2, repeat('x', 4000)), (3, 'small too')`)
	b.waitMetric("cdcbridge_events_delivered_total", 3, 60*time.Second)
	if err, _ := b.stop(20 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, b.log())
	}

	var placeholder *cdc.Event
	for _, r := range fake.Records() {
		e, err := cdc.Decode(r.Data)
		if err != nil {
			t.Fatalf("record is not an envelope: %v", err)
		}
		if e.Oversize != nil {
			placeholder = e
		}
	}
	if placeholder == nil || !strings.Contains(string(placeholder.Key), `"id":2`) || placeholder.After != nil {
		t.Fatalf("no placeholder for the oversized row: %+v", placeholder)
	}

	dlq := func(args ...string) (int, string) {
		cmd := exec.Command(buildBinary(t), append([]string{"dlq"}, args...)...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test",
			"AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true"}, env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, out.String()
	}
	code, out := dlq("list")
	if code != 0 || !strings.Contains(out, placeholder.ID) || !strings.Contains(out, "1 event(s) to replay") {
		t.Fatalf("dlq list: exit %d\n%s", code, out)
	}
	// Still too large: the replay stops and names the event, nothing is lost.
	code, out = dlq("replay")
	if code == 0 || !strings.Contains(out, placeholder.ID) {
		t.Fatalf("replay over the limit: exit %d, want a failure naming %s\n%s", code, placeholder.ID, out)
	}
	t.Logf("replay over the limit says:\n%s", out)
	if code, out = dlq("list"); !strings.Contains(out, "1 event(s) to replay") {
		t.Fatalf("failed replay lost the event: exit %d\n%s", code, out)
	}

	big := int32(1024)
	fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &big})
	code, out = dlq("replay")
	if code != 0 || !strings.Contains(out, "replayed 1 event(s)") {
		t.Fatalf("dlq replay: exit %d\n%s", code, out)
	}
	var replayed *cdc.Event
	for _, r := range fake.Records() {
		if e, err := cdc.Decode(r.Data); err == nil && e.Replayed {
			replayed = e
		}
	}
	if replayed == nil || replayed.ID != placeholder.ID || replayed.Sequence != placeholder.Sequence ||
		replayed.PartitionKey != placeholder.PartitionKey || !strings.Contains(string(replayed.After), strings.Repeat("x", 4000)) {
		t.Fatalf("replayed event %+v does not match placeholder %+v", replayed, placeholder)
	}
	if left, _ := filepath.Glob(filepath.Join(dlqDir, "dlq-*")); len(left) != 0 {
		t.Fatalf("dead-letter files left after a full replay: %v", left)
	}
	if code, out = dlq("list"); code != 0 || !strings.Contains(out, "0 event(s) to replay") {
		t.Fatalf("dlq list after replay: exit %d\n%s", code, out)
	}
}
