package kpl

// Cross-checks against an independent implementation of the format, the
// npm package aws-kinesis-agg, run by node.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

const aggPackageVersion = "4.2.8"

var update = flag.Bool("update", false, "rewrite testdata/ golden files with aws-kinesis-agg")

// nodeScript reads one JSON request on stdin and writes one JSON answer.
// Data travels as base64.
const nodeScript = `
const agg = require('aws-kinesis-agg');
const version = require('aws-kinesis-agg/package.json').version;
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const req = JSON.parse(input);
  if (req.mode === 'version') {
    process.stdout.write(JSON.stringify({version}));
  } else if (req.mode === 'aggregate') {
    const a = new agg.RecordAggregator();
    for (const r of req.records) {
      const rec = {partitionKey: r.PartitionKey, data: Buffer.from(r.Data || '', 'base64')};
      if (r.ExplicitHashKey) rec.explicitHashKey = r.ExplicitHashKey;
      a.addUserRecord(rec);
    }
    process.stdout.write(JSON.stringify({data: a.build().data.toString('base64')}));
  } else if (req.mode === 'deaggregate') {
    agg.deaggregateSync({data: req.data, partitionKey: 'outer', sequenceNumber: '1'}, true, (err, recs) => {
      if (err) {
        process.stderr.write('deaggregate: ' + err + '\n');
        process.exit(1);
      }
      process.stdout.write(JSON.stringify({records: recs.map((r) => ({
        PartitionKey: r.partitionKey,
        ExplicitHashKey: r.explicitPartitionKey || '',
        Data: r.data,
      }))}));
    });
  } else {
    process.stderr.write('unknown mode ' + req.mode + '\n');
    process.exit(2);
  }
});
`

type nodeRequest struct {
	Mode    string       `json:"mode"`
	Records []UserRecord `json:"records,omitempty"`
	Data    []byte       `json:"data,omitempty"`
}

type nodeResponse struct {
	Version string       `json:"version"`
	Records []UserRecord `json:"records"`
	Data    []byte       `json:"data"`
}

// aggNode returns a function that runs one request through aws-kinesis-agg.
// Without node or the package it fails the test, except in a short run
// outside CI, where it skips.
func aggNode(t *testing.T) func(*testing.T, nodeRequest) nodeResponse {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		testenv.Unavailable(t, "node and aws-kinesis-agg@"+aggPackageVersion,
			fmt.Errorf(format+"; run scripts/install-test-deps", args...))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node not found: %v", err)
	}
	modules, err := nodeModules()
	if err != nil {
		unavailable("%v", err)
	}
	if _, err := os.Stat(filepath.Join(modules, "aws-kinesis-agg", "package.json")); err != nil {
		unavailable("aws-kinesis-agg is not installed in %s", modules)
	}

	run := func(t *testing.T, req nodeRequest) nodeResponse {
		t.Helper()
		in, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(node, "-e", nodeScript)
		cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
		cmd.Stdin = bytes.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("node aws-kinesis-agg %s: %v\n%s", req.Mode, err, stderr.Bytes())
		}
		var resp nodeResponse
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("node aws-kinesis-agg %s: bad answer %q: %v", req.Mode, out, err)
		}
		return resp
	}
	if v := run(t, nodeRequest{Mode: "version"}).Version; v != aggPackageVersion {
		t.Fatalf("aws-kinesis-agg %s is installed in %s, tests are pinned to %s; run scripts/install-test-deps", v, modules, aggPackageVersion)
	}
	return run
}

// nodeModules finds <repo>/.cache/node/node_modules from the test's
// working directory.
func nodeModules() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".cache", "node", "node_modules"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod) not found")
		}
		dir = parent
	}
}

// aggCompatible keeps the records that aws-kinesis-agg 4.2.8 handles
// correctly on its own:
//   - Its aggregator builds the key tables with Object.keys, which lists
//     array-index-like keys ("10", "2": decimal below 2^32-1) first in
//     numeric order, so the indexes it wrote no longer match the tables. As
//     explicit hash keys are decimal numbers, only large ones are safe.
//   - It rejects empty partition keys and aggregates over 1 MiB.
//
// (Its deaggregator also reads a record without an explicit hash key as
// having the table's first entry, protobuf's default index 0: see
// withoutDefaultedHashKeys.)
func aggCompatible(recs []UserRecord) []UserRecord {
	var (
		out []UserRecord
		a   Aggregator
	)
	for _, r := range recs {
		if r.PartitionKey == "" || isArrayIndex(r.PartitionKey) || isArrayIndex(r.ExplicitHashKey) {
			continue
		}
		if a.SizeWith(r.PartitionKey, r.ExplicitHashKey, len(r.Data)) > 1<<20 {
			continue
		}
		a.AddWithHashKey(r.PartitionKey, r.ExplicitHashKey, r.Data)
		out = append(out, r)
	}
	return out
}

// isArrayIndex reports whether JavaScript treats s as an array index
// property name, which Object.keys lists before all others.
func isArrayIndex(s string) bool {
	v, err := strconv.ParseUint(s, 10, 32)
	return err == nil && v < math.MaxUint32 && strconv.FormatUint(v, 10) == s
}

func withoutDefaultedHashKeys(want, got []UserRecord) []UserRecord {
	fixed := append([]UserRecord(nil), got...)
	for i := range fixed {
		if i < len(want) && want[i].ExplicitHashKey == "" {
			fixed[i].ExplicitHashKey = ""
		}
	}
	return fixed
}

// crossCheckCases are the round-trip cases plus ones that stress the
// tables; all records must suit aws-kinesis-agg (see aggCompatible).
func crossCheckCases() map[string][]UserRecord {
	cases := map[string][]UserRecord{}
	for _, tc := range roundTripCases {
		if recs := aggCompatible(tc.recs); len(recs) > 0 {
			cases[tc.name] = recs
		}
	}
	var hashed []UserRecord
	for i := range 300 {
		hashed = append(hashed, UserRecord{
			PartitionKey:    fmt.Sprintf("k%d", i%150),
			ExplicitHashKey: fmt.Sprintf("%d", 1<<40+(i%140)*1000003),
			Data:            []byte(strings.Repeat("d", i)),
		})
	}
	cases["every record with an explicit hash key, 140 of them"] = hashed
	cases["near 1 MiB"] = []UserRecord{{PartitionKey: "big", Data: bytes.Repeat([]byte{0xA5}, 1<<20-64)}}
	return cases
}

func TestAggregatesOfAwsKinesisAggDecode(t *testing.T) {
	node := aggNode(t)
	for name, recs := range crossCheckCases() {
		t.Run(name, func(t *testing.T) {
			theirs := node(t, nodeRequest{Mode: "aggregate", Records: recs}).Data
			got, err := Decode(theirs)
			if err != nil {
				t.Fatalf("Decode(aws-kinesis-agg's aggregate): %v", err)
			}
			if d := diffRecords(recs, got); d != "" {
				t.Errorf("Decode(aws-kinesis-agg's aggregate) (-want +got):\n%s", d)
			}
			// Both encoders write fields in field number order with the
			// tables in first-use order; the format does not demand it, but
			// a difference here means one of them changed.
			if ours := aggregate(recs); !bytes.Equal(ours, theirs) {
				t.Errorf("our aggregate differs from aws-kinesis-agg's:\nours   %x\ntheirs %x", head(ours), head(theirs))
			}
		})
	}
}

func TestAwsKinesisAggDecodesOurAggregates(t *testing.T) {
	node := aggNode(t)
	cases := crossCheckCases()
	// Integer-like and empty keys are fine for its decoder.
	cases["integer-like keys"] = []UserRecord{
		{PartitionKey: "10", Data: []byte("a")},
		{PartitionKey: "2", Data: []byte("b")},
		{PartitionKey: "10", ExplicitHashKey: "7", Data: []byte("c")},
	}
	for name, recs := range cases {
		t.Run(name, func(t *testing.T) {
			got := node(t, nodeRequest{Mode: "deaggregate", Data: aggregate(recs)}).Records
			if d := diffRecords(recs, withoutDefaultedHashKeys(recs, got)); d != "" {
				t.Errorf("aws-kinesis-agg deaggregating our aggregate (-want +got):\n%s", d)
			}
		})
	}
}

func head(b []byte) []byte {
	if len(b) > 256 {
		return b[:256]
	}
	return b
}

// The golden aggregate was written by aws-kinesis-agg, so the check that we
// read its output holds on machines without node.
const (
	goldenBlob    = "testdata/aws-kinesis-agg-4.2.8.bin"
	goldenRecords = "testdata/aws-kinesis-agg-4.2.8.json"
)

func goldenInput() []UserRecord {
	return []UserRecord{
		{PartitionKey: "public.orders:[42]", Data: []byte(`{"specversion":"1.0","id":"00000000016B3748:00000001"}`)},
		{PartitionKey: "public.orders:[43]", ExplicitHashKey: "170141183460469231731687303715884105728", Data: []byte(`{"id":"00000000016B3748:00000002"}`)},
		{PartitionKey: "public.orders:[42]", Data: []byte(`{"id":"00000000016B3748:00000003"}`)},
		{PartitionKey: `public.clients:["Zoë","東京"]`, Data: []byte{}},
		{PartitionKey: "bin", ExplicitHashKey: "340282366920938463463374607431768211455", Data: binaryData()},
		{PartitionKey: "public.orders:[43]", ExplicitHashKey: "170141183460469231731687303715884105728", Data: bytes.Repeat([]byte("0123456789"), 20)},
	}
}

func TestGoldenAwsKinesisAgg(t *testing.T) {
	if *update {
		node := aggNode(t)
		recs := goldenInput()
		blob := node(t, nodeRequest{Mode: "aggregate", Records: recs}).Data
		js, err := json.MarshalIndent(recs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenBlob, blob, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenRecords, append(js, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	blob, err := os.ReadFile(goldenBlob)
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(goldenRecords)
	if err != nil {
		t.Fatal(err)
	}
	var want []UserRecord
	if err := json.Unmarshal(js, &want); err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(goldenInput(), want); d != "" {
		t.Fatalf("%s is stale, rerun with -update (-code +file):\n%s", goldenRecords, d)
	}
	got, err := Decode(blob)
	if err != nil {
		t.Fatalf("Decode(%s): %v", goldenBlob, err)
	}
	if d := diffRecords(want, got); d != "" {
		t.Errorf("Decode(%s) (-want +got):\n%s", goldenBlob, d)
	}
	if ours := aggregate(want); !bytes.Equal(ours, blob) {
		t.Errorf("our aggregate of the golden records differs from %s:\nours   %x\ntheirs %x", goldenBlob, ours, blob)
	}
}

func TestGoldenIsWhatAwsKinesisAggWrites(t *testing.T) {
	node := aggNode(t)
	blob, err := os.ReadFile(goldenBlob)
	if err != nil {
		t.Fatal(err)
	}
	if got := node(t, nodeRequest{Mode: "aggregate", Records: goldenInput()}).Data; !bytes.Equal(got, blob) {
		t.Errorf("aws-kinesis-agg now writes\n%s\nnot %s's\n%s", base64.StdEncoding.EncodeToString(got), goldenBlob, base64.StdEncoding.EncodeToString(blob))
	}
}
