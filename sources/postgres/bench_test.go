package postgres

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/jackc/pglogrepl"
)

// insertMessage builds a pgoutput Insert of text values.
func insertMessage(relID uint32, vals ...string) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, relID)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

// BenchmarkDecodeInsert measures decoding alone: pgoutput Insert message
// to an event with key, partition key and JSON after image.
func BenchmarkDecodeInsert(b *testing.B) {
	types := newTypeCache()
	rel := newRelation(1, "public", "orders", 'd')
	for _, c := range []struct {
		name string
		oid  uint32
	}{{"id", oidInt8}, {"customer", oidText}, {"amount", oidNumeric}, {"created_at", oidTimestampTZ}, {"attrs", oidJSONB}, {"paid", oidBool}} {
		ti, _ := types.known(c.oid)
		rel.addColumn(c.name, c.oid, ti)
	}
	rel.keyIdx = []int{0}
	pos := newPositions(1)
	emit := func(_ context.Context, e *cdc.Event) error { e.Ack(); return nil }
	d := newDecoder("/cdcbridge/postgres/1/db/slot", types, nil, pos, emit, newMetrics(nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.rels[1] = rel
	if err := d.begin(context.Background(), &pglogrepl.BeginMessage{FinalLSN: 0x16B3748, CommitTime: time.Now(), Xid: 731}); err != nil {
		b.Fatal(err)
	}
	msg := insertMessage(1, "1234567", "customer \"name\" here", "1234.50", "2026-11-26 10:15:02.123456+00", `{"k": "v", "n": [1, 2, 3]}`, "t")
	ctx := context.Background()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := d.handle(ctx, msg, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
