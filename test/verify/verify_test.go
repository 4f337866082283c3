package verify

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// aggregate builds an aggregate by hand from the format's description.
// keys[i] is record i's partition key; ehks[i] its explicit hash key or "".
func aggregate(keys, ehks []string, datas [][]byte) []byte {
	var msg []byte
	pkIndex, ehIndex := map[string]int{}, map[string]int{}
	var pkTable, ehTable []string
	for i := range keys {
		if _, ok := pkIndex[keys[i]]; !ok {
			pkIndex[keys[i]] = len(pkTable)
			pkTable = append(pkTable, keys[i])
		}
		if ehks[i] != "" {
			if _, ok := ehIndex[ehks[i]]; !ok {
				ehIndex[ehks[i]] = len(ehTable)
				ehTable = append(ehTable, ehks[i])
			}
		}
	}
	for _, k := range pkTable {
		msg = protowire.AppendTag(msg, 1, protowire.BytesType)
		msg = protowire.AppendString(msg, k)
	}
	for _, k := range ehTable {
		msg = protowire.AppendTag(msg, 2, protowire.BytesType)
		msg = protowire.AppendString(msg, k)
	}
	for i := range keys {
		var r []byte
		r = protowire.AppendTag(r, 1, protowire.VarintType)
		r = protowire.AppendVarint(r, uint64(pkIndex[keys[i]]))
		if ehks[i] != "" {
			r = protowire.AppendTag(r, 2, protowire.VarintType)
			r = protowire.AppendVarint(r, uint64(ehIndex[ehks[i]]))
		}
		r = protowire.AppendTag(r, 3, protowire.BytesType)
		r = protowire.AppendBytes(r, datas[i])
		msg = protowire.AppendTag(msg, 3, protowire.BytesType)
		msg = protowire.AppendBytes(msg, r)
	}
	sum := md5.Sum(msg)
	out := append(append([]byte{}, aggMagic...), msg...)
	return append(out, sum[:]...)
}

// nodeAggregate aggregates with the npm package aws-kinesis-agg, an
// implementation of the format independent of this package and of
// kpl.
func nodeAggregate(t *testing.T, users []aggUser) []byte {
	t.Helper()
	cache, err := testenv.NodeCache()
	modules := filepath.Join(cache, "node_modules")
	if err == nil {
		_, err = os.Stat(filepath.Join(modules, "aws-kinesis-agg", "package.json"))
	}
	node, lerr := exec.LookPath("node")
	if err != nil || lerr != nil {
		testenv.Unavailable(t, "node and aws-kinesis-agg", fmt.Errorf("%v, %v: run scripts/install-test-deps", err, lerr))
	}
	const script = `
const agg = require('aws-kinesis-agg');
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const a = new agg.RecordAggregator();
  for (const r of JSON.parse(input)) {
    const rec = {partitionKey: r.PartitionKey, data: Buffer.from(r.Data, 'base64')};
    if (r.ExplicitHashKey) rec.explicitHashKey = r.ExplicitHashKey;
    a.addUserRecord(rec);
  }
  process.stdout.write(a.build().data.toString('base64'));
});`
	in, _ := json.Marshal(users)
	cmd := exec.Command(node, "-e", script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.Bytes())
	}
	b, err := base64.StdEncoding.DecodeString(string(out))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeaggregate(t *testing.T) {
	users := []aggUser{
		{PartitionKey: "public.t:[1]", Data: []byte(`{"a":1}`)},
		{PartitionKey: "public.t:[2]", ExplicitHashKey: "170141183460469231731687303715884105727", Data: []byte("second")},
		{PartitionKey: "public.t:[1]", Data: []byte{}},
		{PartitionKey: "ü:[\"😀\"]", Data: bytes.Repeat([]byte{0, 0xff}, 3000)},
	}
	t.Run("aws-kinesis-agg", func(t *testing.T) {
		got, err := deaggregate(nodeAggregate(t, users))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(users, got, cmp.Comparer(bytes.Equal)); diff != "" {
			t.Fatalf("de-aggregated (-want +got):\n%s", diff)
		}
	})
	t.Run("by hand", func(t *testing.T) {
		var keys, ehks []string
		var datas [][]byte
		for _, u := range users {
			keys, ehks, datas = append(keys, u.PartitionKey), append(ehks, u.ExplicitHashKey), append(datas, u.Data)
		}
		got, err := deaggregate(aggregate(keys, ehks, datas))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(users, got, cmp.Comparer(bytes.Equal)); diff != "" {
			t.Fatalf("de-aggregated (-want +got):\n%s", diff)
		}
	})

	good := aggregate([]string{"k"}, []string{""}, [][]byte{[]byte("x")})
	badDigest := append([]byte{}, good...)
	badDigest[len(badDigest)-1] ^= 1
	var badIndex []byte
	{
		var r, msg []byte
		r = protowire.AppendTag(r, 1, protowire.VarintType)
		r = protowire.AppendVarint(r, 3) // no partition key table entry 3
		r = protowire.AppendTag(r, 3, protowire.BytesType)
		r = protowire.AppendBytes(r, []byte("x"))
		msg = protowire.AppendTag(msg, 1, protowire.BytesType)
		msg = protowire.AppendString(msg, "k")
		msg = protowire.AppendTag(msg, 3, protowire.BytesType)
		msg = protowire.AppendBytes(msg, r)
		sum := md5.Sum(msg)
		badIndex = append(append(append([]byte{}, aggMagic...), msg...), sum[:]...)
	}
	var noData []byte
	{
		var r, msg []byte
		r = protowire.AppendTag(r, 1, protowire.VarintType)
		r = protowire.AppendVarint(r, 0)
		msg = protowire.AppendTag(msg, 1, protowire.BytesType)
		msg = protowire.AppendString(msg, "k")
		msg = protowire.AppendTag(msg, 3, protowire.BytesType)
		msg = protowire.AppendBytes(msg, r)
		sum := md5.Sum(msg)
		noData = append(append(append([]byte{}, aggMagic...), msg...), sum[:]...)
	}
	for name, b := range map[string][]byte{
		"digest":    badDigest,
		"truncated": good[:len(good)-3],
		"short":     aggMagic,
		"index":     badIndex,
		"no data":   noData,
	} {
		if _, err := deaggregate(b); err == nil {
			t.Errorf("%s: de-aggregated without error", name)
		}
	}
}

func TestParseEnvelopeGolden(t *testing.T) {
	files, _ := filepath.Glob("../../cdc/testdata/*.json")
	if len(files) < 5 {
		t.Fatalf("golden envelopes not found: %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil {
			t.Fatal(err)
		}
		if _, err := parseEnvelope(compact.Bytes()); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
	// A table without a key is ordered as a whole: no key object, and the
	// partition key schema.table:*.
	keyless := `{"specversion":"1.0","id":"1","source":"/s","type":"io.cdcbridge.insert","subject":"public.t",` +
		`"datacontenttype":"application/json","partitionkey":"public.t:*","sequence":"1","data":{"op":"insert","key":null,"before":null,"after":{"a":1}}}`
	if _, err := parseEnvelope([]byte(keyless)); err != nil {
		t.Errorf("keyless table: %v", err)
	}
	if _, err := parseEnvelope([]byte(strings.Replace(keyless, `public.t:*`, `public.t:[1]`, 1))); err == nil {
		t.Errorf("a keyed partition key without a key object was accepted")
	}
	insert, _ := os.ReadFile("../../cdc/testdata/insert.json")
	for name, mutate := range map[string]func(s string) string{
		"type mismatch":   func(s string) string { return strings.Replace(s, `"io.cdcbridge.insert"`, `"io.cdcbridge.update"`, 1) },
		"spec version":    func(s string) string { return strings.Replace(s, `"1.0"`, `"0.3"`, 1) },
		"no id":           func(s string) string { return strings.Replace(s, `"id"`, `"xid"`, 1) },
		"content type":    func(s string) string { return strings.Replace(s, `"application/json"`, `"text/plain"`, 1) },
		"insert no after": func(s string) string { return strings.Replace(s, `"after"`, `"afterwards"`, 1) },
		"bad time":        func(s string) string { return strings.Replace(s, `"time": "`, `"time": "x`, 1) },
		"not json":        func(s string) string { return s[:len(s)/2] },
		"bad utf-8":       func(s string) string { return strings.Replace(s, `public.orders`, "public.\xff", 1) },
	} {
		if _, err := parseEnvelope([]byte(mutate(string(insert)))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// envelope encodes a row change of public.t.
func envelope(t *testing.T, id int, key, ver int, op cdc.Op, pad string) []byte {
	t.Helper()
	img := json.RawMessage(fmt.Sprintf(`{"id":%d,"ver":%d,"pad":%q}`, key, ver, pad))
	e := &cdc.Event{ID: fmt.Sprintf("%016X:00000001", id), Source: "/cdcbridge/postgres/1/db/s", Subject: "public.t",
		Time: time.Now(), PartitionKey: fmt.Sprintf("public.t:[%d]", key), Sequence: fmt.Sprintf("%016X:00000001", id),
		Op: op, Key: json.RawMessage(fmt.Sprintf(`{"id":%d}`, key))}
	if op == cdc.OpDelete {
		e.Before = img
	} else {
		e.After = img
	}
	b, err := cdc.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rec(t *testing.T, data []byte) Record {
	t.Helper()
	e, err := parseEnvelope(data)
	r := Record{ShardID: "s", Data: data}
	if err != nil {
		r.Err = err
	} else {
		r.PartitionKey = e.PartitionKey
		r.check("")
	}
	return r
}

func TestCompare(t *testing.T) {
	key := func(id int) string { return CanonicalKey(map[string]any{"id": id}) }
	newLog := func() *Log {
		l := &Log{}
		l.Add(Change{Table: "public.t", Key: key(1), Op: "insert", Ver: 1, Digest: PayloadDigest("a")},
			Change{Table: "public.t", Key: key(1), Op: "update", Ver: 2, Digest: PayloadDigest("b")},
			Change{Table: "public.t", Key: key(1), Op: "delete", Ver: 2},
			Change{Table: "public.t", Key: key(2), Op: "insert", Ver: 1})
		return l
	}
	ins1, upd1, del1 := envelope(t, 1, 1, 1, cdc.OpInsert, "a"), envelope(t, 2, 1, 2, cdc.OpUpdate, "b"), envelope(t, 3, 1, 2, cdc.OpDelete, "b")
	ins2 := envelope(t, 4, 2, 1, cdc.OpInsert, "c")
	dir := t.TempDir()
	// A dead-letter line for the update and its placeholder.
	var ph cdc.Event
	ev, _ := cdc.Decode(upd1)
	ph = *ev
	ph.Before, ph.After, ph.Oversize = nil, nil, &cdc.Oversize{Bytes: 5000000, DLQ: "dlq-1.jsonl#1"}
	phData, _ := cdc.Encode(&ph)
	line := fmt.Sprintf(`{"reason":"oversize: big","stream":"s","bytes":5000000,"time":"2026-01-01T00:00:00Z","envelope":%s}`+"\n", upd1)
	if err := os.WriteFile(filepath.Join(dir, "dlq-1.jsonl"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	dlq, err := ReadDLQ(dir)
	if err != nil || len(dlq.Entries) != 1 || dlq.Entries[0].Err != nil {
		t.Fatalf("ReadDLQ: %v %+v", err, dlq)
	}
	badPh := ph
	badPh.Oversize = &cdc.Oversize{Bytes: 5000000, DLQ: "dlq-1.jsonl#2"}
	badPhData, _ := cdc.Encode(&badPh)
	reID := envelope(t, 9, 1, 1, cdc.OpInsert, "a")
	moved, _ := cdc.Decode(ins1)
	moved.Time = moved.Time.Add(time.Second)
	movedData, _ := cdc.Encode(moved)

	for _, tc := range []struct {
		name  string
		recs  [][]byte
		check func(Result) bool
	}{
		{"complete with a duplicate", [][]byte{ins1, ins2, upd1, ins1, del1}, func(r Result) bool {
			return r.Err() == nil && r.Delivered == 4 && r.Duplicates == 1
		}},
		{"missing", [][]byte{ins1, ins2, del1}, func(r Result) bool { return r.Missing == 1 }},
		{"reordered", [][]byte{ins1, ins2, del1, upd1}, func(r Result) bool { return r.OrderViolations == 1 && r.Missing == 0 }},
		{"placeholder", [][]byte{ins1, ins2, phData, del1}, func(r Result) bool {
			return r.Err() == nil && r.Placeholders == 1 && r.Delivered == 4
		}},
		{"placeholder without entry", [][]byte{ins1, ins2, badPhData, del1}, func(r Result) bool {
			return r.PlaceholdersUnmatched == 1 && r.Missing == 1
		}},
		{"duplicate that differs", [][]byte{ins1, ins2, upd1, movedData, del1}, func(r Result) bool {
			return r.DuplicatesDiffer == 1 && strings.Contains(strings.Join(r.Samples, "\n"), ".time: ")
		}},
		{"redelivered under a new id", [][]byte{ins1, reID, ins2, upd1, del1}, func(r Result) bool { return r.Redelivered == 1 }},
		{"invalid", [][]byte{ins1, ins2, upd1, del1, []byte(`{"hello":1}`)}, func(r Result) bool { return r.Invalid == 1 && r.Missing == 0 }},
		{"content", [][]byte{envelope(t, 1, 1, 1, cdc.OpInsert, "zzz"), ins2, upd1, del1}, func(r Result) bool { return r.ContentMismatch == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var recs []Record
			for _, d := range tc.recs {
				recs = append(recs, rec(t, d))
			}
			res := Compare(recs, newLog(), dlq)
			if !tc.check(res) {
				t.Fatalf("unexpected result %+v", res)
			}
		})
	}

	t.Run("final state", func(t *testing.T) {
		l := newLog()
		l.SetFinal("public.t", key(1), 0, false)
		l.SetFinal("public.t", key(2), 1, true)
		recs := []Record{rec(t, ins1), rec(t, ins2), rec(t, upd1), rec(t, del1)}
		if res := Compare(recs, l, nil); res.Err() != nil {
			t.Fatal(res.Err())
		}
		l.SetFinal("public.t", key(2), 7, true)
		if res := Compare(recs, l, nil); res.StateMismatch != 1 {
			t.Fatalf("state mismatch not found: %+v", res)
		}
	})
}

// TestReadAll writes plain records and aggregates to kinesalite and reads
// them back: an aggregate whose user record's hash key lies outside the
// shard it was put in is reported invalid.
func TestReadAll(t *testing.T) {
	kin := testenv.Kinesalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := testenv.UniqueName("verify")
	if err := kin.CreateStream(ctx, stream, 2); err != nil {
		t.Fatal(err)
	}
	c := kin.Client()
	shards, err := listShards(ctx, c, stream)
	if err != nil || len(shards) != 2 {
		t.Fatalf("shards %v %v", shards, err)
	}
	first := aws.ToString(shards[0].HashKeyRange.StartingHashKey)
	second := aws.ToString(shards[1].HashKeyRange.StartingHashKey)
	a, b := envelope(t, 1, 1, 1, cdc.OpInsert, "a"), envelope(t, 2, 2, 1, cdc.OpInsert, "b")
	put := func(pk string, ehk *string, data []byte) {
		t.Helper()
		if _, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(pk),
			ExplicitHashKey: ehk, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	put("public.t:[1]", nil, a)
	put("agg", aws.String(first), aggregate([]string{"public.t:[1]", "public.t:[2]"}, []string{first, first}, [][]byte{a, b}))
	// Put in the first shard, but its user record names the second.
	put("agg", aws.String(first), aggregate([]string{"public.t:[2]"}, []string{second}, [][]byte{b}))
	put("other", nil, b) // partition key differs from the envelope's
	gz := func(data []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(data)
		zw.Close()
		return buf.Bytes()
	}
	put("agg", aws.String(first), gz(aggregate([]string{"public.t:[1]", "public.t:[2]"}, []string{first, first}, [][]byte{a, b})))
	put("public.t:[1]", nil, gz(a)) // gzipped, but not an aggregate
	recs, err := ReadAll(ctx, c, stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 8 {
		t.Fatalf("%d records, want 8", len(recs))
	}
	valid, invalid, compressed := 0, 0, 0
	for _, r := range recs {
		if r.Compressed {
			compressed++
		}
		if r.Err != nil {
			invalid++
			if !strings.Contains(r.Err.Error(), "outside the shard") && !strings.Contains(r.Err.Error(), "partition key is") &&
				!strings.Contains(r.Err.Error(), "gzipped record that does not hold a KPL aggregate") {
				t.Errorf("unexpected problem: %v", r.Err)
			}
		} else {
			valid++
			if r.Arrival.IsZero() {
				t.Errorf("record without arrival time")
			}
		}
	}
	if valid != 5 || invalid != 3 || compressed != 3 {
		t.Fatalf("%d valid, %d invalid, %d compressed; want 5, 3, 3", valid, invalid, compressed)
	}

	// A Reader reads on from where it stopped: each read returns every
	// record so far, none twice, in the order ReadAll gives.
	rd := NewReader(c, stream)
	if got, err := rd.Read(ctx); err != nil || len(got) != 8 {
		t.Fatalf("first read: %d records, %v; want 8", len(got), err)
	}
	put("public.t:[1]", aws.String(second), a)
	put("public.t:[2]", aws.String(first), b)
	got, err := rd.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReadAll(ctx, c, stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 10 {
		t.Fatalf("ReadAll: %d records, want 10", len(want))
	}
	seqs := func(rs []Record) []string {
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%s/%s/%d", r.ShardID, r.Sequence, r.SubIndex))
		}
		return out
	}
	if d := cmp.Diff(seqs(want), seqs(got)); d != "" {
		t.Fatalf("second read differs from ReadAll (-ReadAll +Reader):\n%s", d)
	}
}

func TestJSONDiff(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{`{"a":1,"b":{"c":"x"}}`, `{"a":1,"b":{"c":"y"}}`, `.b.c: "x", then "y"`},
		{`{"a":1}`, `{"a":1,"z":true}`, `.z: absent, then true`},
		{`{"a":1,"z":true}`, `{"a":1}`, `.z: true, then absent`},
		{`{"a":1}`, `{ "a": 1 }`, `same JSON value, different bytes`},
		{`{"a":1}`, `{"a":1`, `bytes differ from offset 6 (lengths 7 and 6)`},
		{`[1,2]`, `[1,3]`, `.: [1,2], then [1,3]`},
	} {
		if got := jsonDiff([]byte(tc.a), []byte(tc.b)); got != tc.want {
			t.Errorf("jsonDiff(%s, %s) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}
