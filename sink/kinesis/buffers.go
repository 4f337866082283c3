package kinesis

import (
	"sync"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// Envelope buffers come in size classes 1.5 times apart, from 256 bytes
// to 96 KiB, so that a record's budget charge (its buffer's capacity) is
// within 50% of its size; larger envelopes get exact buffers that are not
// pooled. Put encodes into a pooled scratch buffer and copies the result
// into its class, so the charge never depends on a size guess.
var bufClasses = func() []int {
	var c []int
	for n := 256; n <= 64<<10; n *= 2 {
		c = append(c, n, n*3/2)
	}
	return c
}()

var bufPools = make([]sync.Pool, len(bufClasses))

func classOf(size int) int {
	for i, c := range bufClasses {
		if size <= c {
			return i
		}
	}
	return -1
}

func getBuf(size int) []byte {
	i := classOf(size)
	if i < 0 {
		return make([]byte, 0, size)
	}
	if b, ok := bufPools[i].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, bufClasses[i])
}

func putBuf(b []byte) {
	i := classOf(cap(b))
	if i < 0 || bufClasses[i] != cap(b) {
		return
	}
	b = b[:0]
	bufPools[i].Put(&b)
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// encode returns e's envelope in a buffer of its size class.
func encode(e *cdc.Event) ([]byte, error) {
	sp := scratchPool.Get().(*[]byte)
	enc, err := cdc.AppendEncode((*sp)[:0], e)
	if err != nil {
		scratchPool.Put(sp)
		return nil, err
	}
	buf := append(getBuf(len(enc)), enc...)
	if cap(enc) <= 1<<20 {
		*sp = enc[:0]
		scratchPool.Put(sp)
	}
	return buf, nil
}
