package kpl

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// hotRun is what a hot row's run looks like: envelopes of one key that
// differ in their id, time and a counter.
func hotRun(n int) []UserRecord {
	note := strings.Repeat("9f86d081884c7d659a2feaa0c55ad015", 4)
	recs := make([]UserRecord, n)
	for i := range recs {
		recs[i] = UserRecord{PartitionKey: "public.counters:[1]", Data: fmt.Appendf(nil,
			`{"specversion":"1.0","id":"00000000016B%04X:%08d","source":"/cdcbridge/postgres/7301234567890123456/app/cdcbridge","type":"io.cdcbridge.update","subject":"public.counters","time":"2026-11-26T10:15:%02d.%06dZ","data":{"op":"update","key":{"id":1},"before":{"id":1,"n":%d,"note":%q},"after":{"id":1,"n":%d,"note":%q}}}`,
			i/50, i%50+1, i/1000%60, i*37%1000000, i, note, i+1, note)}
	}
	return recs
}

func TestCompressRoundTrip(t *testing.T) {
	var (
		c  Compressor
		rd Reader
	)
	cases := map[string][]UserRecord{
		"hot run":  hotRun(500),
		"one":      hotRun(1),
		"mixed":    manyRecords(300, 40),
		"hash key": roundTripCases[4].recs,
	}
	for name, recs := range cases {
		t.Run(name, func(t *testing.T) {
			blob := aggregate(recs)
			z := c.Append([]byte("prefix"), blob)
			if string(z[:6]) != "prefix" {
				t.Fatalf("Append overwrote dst")
			}
			z = z[6:]
			if !IsCompressed(z) || IsAggregated(z) {
				t.Fatalf("IsCompressed = %v, IsAggregated = %v; want true, false", IsCompressed(z), IsAggregated(z))
			}
			if len(z) > CompressBound(len(blob)) {
				t.Fatalf("%d bytes compressed to %d, over CompressBound %d", len(blob), len(z), CompressBound(len(blob)))
			}
			if again := c.Append(nil, blob); !bytes.Equal(again, z) {
				t.Fatalf("compressing the same aggregate twice gave different bytes")
			}
			// Standard gzip reads it: a consumer needs no more than that
			// and a KPL de-aggregator.
			zr, err := gzip.NewReader(bytes.NewReader(z))
			if err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			if _, err := raw.ReadFrom(zr); err != nil || !bytes.Equal(raw.Bytes(), blob) {
				t.Fatalf("gzip reader: %v; content equal to the aggregate: %v", err, bytes.Equal(raw.Bytes(), blob))
			}
			got, err := rd.AppendDecode(nil, z)
			if err != nil {
				t.Fatalf("Reader.AppendDecode: %v", err)
			}
			if d := diffRecords(recs, got); d != "" {
				t.Fatalf("records (-want +got):\n%s", d)
			}
			got, err = Decode(z)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := diffRecords(recs, got); d != "" {
				t.Fatalf("Decode records (-want +got):\n%s", d)
			}
			// The same Reader takes plain aggregates too.
			if got, err := rd.AppendDecode(nil, blob); err != nil || len(got) != len(recs) {
				t.Fatalf("plain aggregate: %d records, %v; want %d", len(got), err, len(recs))
			}
		})
	}
}

// TestCompressHotRun: the records of one row compress to a small part of
// their size, which is what lets a hot row through its shard.
func TestCompressHotRun(t *testing.T) {
	recs := hotRun(1000)
	blob := aggregate(recs)
	var c Compressor
	z := c.Append(nil, blob)
	t.Logf("%d records: %d bytes, compressed %d (%.1f bytes a record)", len(recs), len(blob), len(z), float64(len(z))/float64(len(recs)))
	if len(z)*10 > len(blob) {
		t.Fatalf("a hot row's run compressed to %d of %d bytes: less than 10 to 1", len(z), len(blob))
	}
}

func TestCompressBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var c Compressor
	for _, n := range []int{0, 1, 17, 1000, storedBlock - 1, storedBlock, storedBlock + 1, 3*storedBlock + 5, 1 << 20, 10 << 20} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if z := c.Append(nil, b); len(z) > CompressBound(n) {
			t.Errorf("%d random bytes compressed to %d, over CompressBound %d", n, len(z), CompressBound(n))
		}
	}
}

func TestReaderRejects(t *testing.T) {
	var c Compressor
	blob := aggregate(hotRun(20))
	good := c.Append(nil, blob)
	gz := func(content []byte) []byte { return c.Append(nil, content) }
	badDigest := bytes.Clone(blob)
	badDigest[len(badDigest)-1] ^= 1
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	cases := map[string]struct {
		blob []byte
		want error
		msg  string
	}{
		"cut":             {good[:len(good)-5], ErrMalformed, "gzip"},
		"crc":             {flip(len(good) - 6), ErrMalformed, "checksum"},
		"body":            {flip(len(good) / 2), ErrMalformed, "gzip"},
		"trailing":        {append(bytes.Clone(good), 0), ErrMalformed, "after the gzip member"},
		"two members":     {append(bytes.Clone(good), good...), ErrMalformed, "after the gzip member"},
		"json inside":     {gz([]byte(`{"specversion":"1.0"}`)), ErrMalformed, "does not hold an aggregated record"},
		"bad digest":      {gz(badDigest), ErrChecksum, ""},
		"bomb":            {gz(make([]byte, MaxInflated+1)), ErrMalformed, "more than"},
		"header only":     {good[:gzipFrame], ErrMalformed, "gzip"},
		"not even header": {[]byte(gzipMagic + "\x00"), ErrNotAggregated, ""},
	}
	var rd Reader
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := rd.AppendDecode(nil, tc.blob)
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) || got != nil {
				t.Fatalf("AppendDecode = %d records, %v; want %v containing %q", len(got), err, tc.want, tc.msg)
			}
			// The Reader is fine after a failure.
			if got, err := rd.AppendDecode(nil, good); err != nil || len(got) != 20 {
				t.Fatalf("after the failure: %d records, %v", len(got), err)
			}
		})
	}
}
