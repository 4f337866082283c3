package kinesis

// aggregate builds one aggregate from s's ready keys (only the first with
// oneKey), at most capBytes (partition key included), and adds it to b. It
// returns the user records taken and the entry's size.
func (l *loop) aggregate(b *batch, s *shard, capBytes int, oneKey bool) (int, int) {
	a := &l.agg
	a.Reset()
	first := len(b.recs)
	var aggPK *string
	for s.readyHead != nil {
		k := s.readyHead
		take := 0
		for r := k.head; r != nil; r = r.next {
			if r.noAgg || r.size() > l.recordLimit {
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
		l.unready(s, k)
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
		b.addRecord(s, l.smap.version, r)
		return 1, r.size()
	}
	blob := a.Bytes(getBuf(a.Size()))
	b.addAggregate(s, l.smap.version, first, blob, aggPK)
	l.m.userPerAgg.Observe(float64(n))
	return n, len(blob) + len(*aggPK)
}
