package kinesis

import "github.com/cdcbridge/cdcbridge/sink/kinesis/kpl"

// aggregate builds one aggregate from s's ready keys (only the first with
// oneKey) and adds it to b. The entry (partition key included) stays
// within hard bytes, and within pace bytes too unless it is compressed:
// then its records are what compresses into pace at the recent ratio, and
// an entry beyond pace is paid for by the shard's next wait. It returns
// the user records taken and the entry's size.
func (l *loop) aggregate(b *batch, s *shard, hard, pace int, oneKey bool) (int, int) {
	capBytes := min(hard, pace)
	if l.cfg.CompressAggregates {
		// Whatever the ratio, what compresses from capBytes fits in hard.
		capBytes = min(hard-(kpl.CompressBound(hard)-hard), int(float64(pace)*l.zipEstimate()))
	}
	a := &l.agg
	a.Reset()
	first := len(b.recs)
	var aggPK *string
	for s.readyHead != nil {
		k := s.readyHead
		take := 0
		for r := k.head; r != nil; r = r.next {
			if r.noAgg || r.size() > l.stream.recordLimit {
				break
			}
			pkLen := len(r.pk)
			if aggPK != nil {
				pkLen = len(*aggPK)
			}
			if a.SizeWith(r.pk, "", len(r.buf))+pkLen > capBytes {
				break
			}
			if aggPK == nil {
				aggPK = &r.pk
			}
			a.Add(r.pk, r.buf)
			b.recs = append(b.recs, r)
			take++
		}
		if take == 0 {
			break
		}
		l.ready.remove(s, k)
		k.sent = take
		if take < k.n || oneKey {
			break // the aggregate is full, or holds its one key
		}
	}
	n := a.Len()
	switch n {
	case 0:
		return 0, 0
	case 1:
		r := b.recs[first]
		b.recs = b.recs[:first]
		b.addRecord(s, l.stream.version(), r)
		return 1, r.size()
	}
	blob := l.pack(a)
	b.addAggregate(s, l.stream.version(), first, blob, aggPK)
	l.m.userPerAgg.Observe(float64(n))
	return n, len(blob) + len(*aggPK)
}

// pack returns a's aggregate in a buffer of its size class, compressed
// with CompressAggregates.
func (l *loop) pack(a *kpl.Aggregator) []byte {
	if !l.cfg.CompressAggregates {
		return a.Bytes(getBuf(a.Size()))
	}
	l.zipRaw = a.Bytes(l.zipRaw[:0])
	l.zipOut = l.zip.Append(l.zipOut[:0], l.zipRaw)
	// Recent aggregates weigh most, and large ones more than small ones.
	const decay = 0.9
	l.zipRawSum = l.zipRawSum*decay + float64(len(l.zipRaw))
	l.zipOutSum = l.zipOutSum*decay + float64(len(l.zipOut))
	l.m.aggBytes.WithLabelValues("raw").Add(float64(len(l.zipRaw)))
	l.m.aggBytes.WithLabelValues("compressed").Add(float64(len(l.zipOut)))
	return append(getBuf(len(l.zipOut)), l.zipOut...)
}

// zipRatio is the recent ratio of aggregates' size to their compressed
// size: 1 before the first.
func (l *loop) zipRatio() float64 {
	if l.zipOutSum == 0 {
		return 1
	}
	return l.zipRawSum / l.zipOutSum
}

// zipEstimate is what the next aggregate is sized by: a little below the
// recent ratio, so that an aggregate rarely outgrows its shard's tokens.
func (l *loop) zipEstimate() float64 { return max(1, 0.9*l.zipRatio()) }
