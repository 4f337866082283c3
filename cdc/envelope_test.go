package cdc

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

var commitTime = time.Date(2026, 11, 26, 10, 15, 2, 123456000, time.UTC)

const pgSource = "/cdcbridge/postgres/7301234567890123456/appdb/cdcbridge"

func pgInfo(ordinal uint32, last bool) SourceInfo {
	info := SourceInfo{CommitLSN: "0/16B3748", TxID: 731, Ordinal: ordinal, LastInTx: last, Schema: "public", Table: "orders"}
	if last {
		info.TxEndLSN = "0/16B3780"
	}
	return info
}

// goldenEvents has one event per op, the oversize placeholder and the
// message content encodings.
func goldenEvents() map[string]*Event {
	row := func(op Op, ordinal uint32, key, before, after string) *Event {
		e := &Event{
			ID: ChangeID(0x16B3748, ordinal), Source: pgSource, Subject: "public.orders", Time: commitTime,
			PartitionKey: PartitionKey("public.orders", []byte("[42]")), Op: op,
			Key: json.RawMessage(key), Info: pgInfo(ordinal, false),
		}
		e.Sequence = e.ID
		if before != "" {
			e.Before = json.RawMessage(before)
		}
		if after != "" {
			e.After = json.RawMessage(after)
		}
		return e
	}
	update := row(OpUpdate, 3, `{"id":42}`, `{"id":42,"status":"new"}`, `{"id":42,"status":"paid"}`)
	toast := row(OpUpdate, 4, `{"id":42}`, "", `{"id":42,"status":"shipped"}`)
	toast.UnchangedToast = []string{"notes"}
	del := row(OpDelete, 5, `{"id":42}`, `{"id":42,"status":"shipped"}`, "")
	del.Info = pgInfo(5, true)
	read := &Event{
		ID: SnapshotID(0x16B0000, "public.orders", "public.orders:[42]"), Source: pgSource, Subject: "public.orders",
		Time: commitTime, PartitionKey: "public.orders:[42]", Sequence: SnapshotSequence(0x16B0000), Op: OpRead,
		Key: json.RawMessage(`{"id":42}`), After: json.RawMessage(`{"id":42,"status":"new"}`),
		Info: SourceInfo{Snapshot: true, ConsistentPoint: "0/16B0000", Schema: "public", Table: "orders"},
	}
	trunc := &Event{
		ID: ChangeID(0x16C0000, 1), Source: pgSource, Subject: "public.orders", Time: commitTime,
		PartitionKey: TablePartitionKey("public.orders"), Op: OpTruncate,
		Info: SourceInfo{CommitLSN: "0/16C0000", TxEndLSN: "0/16C0040", TxID: 740, Ordinal: 1, LastInTx: true, Schema: "public", Table: "orders"},
	}
	trunc.Sequence = trunc.ID
	msg := func(content string) *Event {
		return &Event{
			ID: MessageID(0x16D0000), Source: pgSource, Time: commitTime, PartitionKey: "message:audit", Op: OpMessage,
			Message: &Message{Prefix: "audit", Transactional: false, Content: []byte(content)},
			Info:    SourceInfo{LSN: "0/16D0000"},
		}
	}
	placeholder := row(OpUpdate, 6, `{"id":42}`, "", "")
	placeholder.Oversize = &Oversize{Bytes: 2097152, DLQ: "dlq-20261126.jsonl#17"}
	ddb := &Event{
		ID: "c81e728d9d4c2f636f067f89cc14862c", Source: "/cdcbridge/dynamodb/us-east-1/Orders", Subject: "Orders",
		Time: time.Date(2026, 11, 26, 10, 15, 2, 0, time.UTC), PartitionKey: `Orders:["cust-1",42]`,
		Sequence: "0000000000000000000111111111111111111111", Op: OpDelete,
		Key:    json.RawMessage(`{"pk":"cust-1","sk":42}`),
		Before: json.RawMessage(`{"pk":"cust-1","sk":42,"tags":["a","b"],"blob":"AAEC"}`),
		Info:   SourceInfo{ShardID: "shardId-00000001", SequenceNumber: "111111111111111111111", EventName: "REMOVE", ViewType: "NEW_AND_OLD_IMAGES", Table: "Orders", TTL: true},
	}
	return map[string]*Event{
		"insert":          row(OpInsert, 1, `{"id":42}`, "", `{"id":42,"status":"new","note":"caf\u00e9 \"q\"\n"}`),
		"update":          update,
		"update_toast":    toast,
		"delete":          del,
		"truncate":        trunc,
		"read":            read,
		"message_json":    msg(`{"user":"alice","n":[1,2]}`),
		"message_text":    msg(`plain "text"`),
		"message_binary":  msg("\xff\x00\x01"),
		"placeholder":     placeholder,
		"dynamodb_delete": ddb,
	}
}

func TestGolden(t *testing.T) {
	for name, e := range goldenEvents() {
		t.Run(name, func(t *testing.T) {
			got, err := Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".json")
			if *update {
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, got, "", "  "); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, append(pretty.Bytes(), '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./cdc -update to create)", err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, want); err != nil {
				t.Fatalf("golden %s: %v", path, err)
			}
			if diff := cmp.Diff(compact.String(), string(got)); diff != "" {
				t.Errorf("envelope differs from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

// TestGoldenCloudEvents parses every golden file with the CloudEvents SDK,
// an independent check that the envelope is valid CloudEvents 1.0.
func TestGoldenCloudEvents(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) < len(goldenEvents()) {
		t.Fatalf("golden files: %v (found %d)", err, len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ce cloudevents.Event
		if err := json.Unmarshal(b, &ce); err != nil {
			t.Errorf("%s: CloudEvents SDK rejects it: %v", f, err)
			continue
		}
		if err := ce.Validate(); err != nil {
			t.Errorf("%s: invalid CloudEvent: %v", f, err)
		}
		if ce.SpecVersion() != "1.0" || !strings.HasPrefix(ce.Type(), TypePrefix) {
			t.Errorf("%s: specversion %q type %q", f, ce.SpecVersion(), ce.Type())
		}
		ext := ce.Extensions()
		if ext["partitionkey"] == nil {
			t.Errorf("%s: partitionkey extension missing: %v", f, ext)
		}
		if ce.DataContentType() != "application/json" || !json.Valid(ce.Data()) {
			t.Errorf("%s: data is not JSON (content type %q)", f, ce.DataContentType())
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for name, e := range goldenEvents() {
		t.Run(name, func(t *testing.T) {
			b, err := Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			want := *e
			if want.Oversize != nil {
				want.Before, want.After = nil, nil
			}
			if diff := cmp.Diff(&want, got, cmp.Comparer(func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }),
				cmp.Comparer(func(a, b func()) bool { return (a == nil) == (b == nil) })); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			again, err := Encode(got)
			if err != nil || !bytes.Equal(again, b) {
				t.Errorf("re-encoding differs (err %v):\n%s\n%s", err, b, again)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := `"id":"1","source":"/s","type":"io.cdcbridge.insert","partitionkey":"t:[1]","data":{"op":"insert","key":{"id":1},"before":null,"after":{"id":1},"source":{}}`
	tests := []struct{ name, doc, want string }{
		{"not json", `{`, "unexpected end"},
		{"array", `[]`, "cannot unmarshal array"},
		{"no specversion", `{` + valid + `}`, "missing specversion"},
		{"wrong specversion", `{"specversion":"0.3",` + valid + `}`, `specversion "0.3", want "1.0"`},
		{"no id", `{"specversion":"1.0","source":"/s","type":"io.cdcbridge.insert","data":{"op":"insert"}}`, "missing id"},
		{"no source", `{"specversion":"1.0","id":"1","type":"io.cdcbridge.insert","data":{"op":"insert"}}`, "missing source"},
		{"no data", `{"specversion":"1.0","id":"1","source":"/s","type":"io.cdcbridge.insert"}`, "missing data"},
		{"unknown op", `{"specversion":"1.0","id":"1","source":"/s","type":"io.cdcbridge.upsert","data":{"op":"upsert"}}`, `unknown op "upsert"`},
		{"type mismatch", `{"specversion":"1.0","id":"1","source":"/s","type":"io.cdcbridge.delete","data":{"op":"insert"}}`, "does not match"},
		{"bad time", `{"specversion":"1.0","id":"1","source":"/s","type":"io.cdcbridge.insert","time":"yesterday","data":{"op":"insert"}}`, "time"},
		{"message without body", `{"specversion":"1.0","id":"1","source":"/s","type":"io.cdcbridge.message","data":{"op":"message"}}`, "without data.message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := Decode([]byte(`{"specversion":"1.0",` + valid + `}`)); err != nil {
		t.Fatalf("valid document rejected: %v", err)
	}
}

func TestEncodeStringEscaping(t *testing.T) {
	cases := []string{"plain", "quote\" back\\slash", "ctl\x00\x01\x1f\x7f", "tab\tnl\nlf\r", "emoji 😀 𝄞 中文", "bad \xff\xfe utf8", "sep \u2028\u2029", "<html>&"}
	for _, s := range cases {
		got := appendString(nil, s)
		if !json.Valid(got) {
			t.Fatalf("%q encodes to invalid JSON %s", s, got)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(s) // encoding/json agrees on the decoded value
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: decoded %q, encoding/json gives %q", s, back, wantBack)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	e := goldenEvents()["update"]
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = AppendEncode(buf[:0], e)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
