package kinesis

import "github.com/cdcbridge/cdcbridge/kpl"

// aggregate builds one aggregate from s's ready keys (only the first with
// oneKey) and adds it to b. The entry (partition key included) stays
// within hard bytes, and within pace bytes too unless it is compressed:
// then its records are what compresses into pace at the recent ratio, and
// an entry beyond pace is paid for by the shard's next wait. It returns
// the user records taken and the entry's size.
func (l *loop) aggregate(b *batch, s *shard, hard, pace int, oneKey bool) (int, int) {
	capBytes := min(hard, pace)
	if l.aggs.compress {
		// Whatever the ratio, what compresses from capBytes fits in hard.
		capBytes = min(hard-(kpl.CompressBound(hard)-hard), int(float64(pace)*l.aggs.estimate()))
	}
	a := &l.aggs.agg
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
	blob := l.aggs.pack(a)
	b.addAggregate(s, l.stream.version(), first, blob, aggPK)
	l.m.userPerAgg.Observe(float64(n))
	return n, len(blob) + len(*aggPK)
}

// aggregates is the loop's aggregation state: the aggregator that builds
// aggregates and their compression, with the recent sizes that size the
// next one.
type aggregates struct {
	compress bool // CompressAggregates
	m        *metrics

	agg      kpl.Aggregator
	emptyAgg kpl.Aggregator // never added to: sizes a lone record

	zip                  kpl.Compressor
	zipRaw, zipOut       []byte  // an aggregate before and after compression
	zipRawSum, zipOutSum float64 // recent sizes before and after, decayed
}

// pack returns a's aggregate in a buffer of its size class, compressed
// with CompressAggregates.
func (g *aggregates) pack(a *kpl.Aggregator) []byte {
	if !g.compress {
		return a.Bytes(getBuf(a.Size()))
	}
	g.zipRaw = a.Bytes(g.zipRaw[:0])
	g.zipOut = g.zip.Append(g.zipOut[:0], g.zipRaw)
	// Recent aggregates weigh most, and large ones more than small ones.
	const decay = 0.9
	g.zipRawSum = g.zipRawSum*decay + float64(len(g.zipRaw))
	g.zipOutSum = g.zipOutSum*decay + float64(len(g.zipOut))
	g.m.aggBytes.WithLabelValues("raw").Add(float64(len(g.zipRaw)))
	g.m.aggBytes.WithLabelValues("compressed").Add(float64(len(g.zipOut)))
	return append(getBuf(len(g.zipOut)), g.zipOut...)
}

// compressed reports whether an aggregate was compressed yet.
func (g *aggregates) compressed() bool { return g.zipOutSum > 0 }

// ratio is the recent ratio of aggregates' size to their compressed
// size: 1 before the first.
func (g *aggregates) ratio() float64 {
	if g.zipOutSum == 0 {
		return 1
	}
	return g.zipRawSum / g.zipOutSum
}

// estimate is what the next aggregate is sized by: a little below the
// recent ratio, so that an aggregate rarely outgrows its shard's tokens.
func (g *aggregates) estimate() float64 { return max(1, 0.9*g.ratio()) }
