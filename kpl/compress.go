package kpl

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
)

// A compressed aggregate is one gzip member (RFC 1952) whose content is an
// aggregated record. It starts with 1F 8B 08, which neither an aggregate
// (F3 89 9A C2) nor a JSON document starts with, so a consumer tells the
// three forms apart by their first bytes.
const gzipMagic = "\x1f\x8b\x08"

const (
	gzipFrame = 10 + 8 // header and trailer, no optional fields
	// storedBlock is the largest stored deflate block, which costs 5
	// bytes of framing; deflate falls back to it for data that does not
	// shrink.
	storedBlock = 65535
)

// MaxInflated is the largest aggregate a compressed aggregate may inflate
// to: a [Reader] rejects more, so a forged record cannot make a consumer
// allocate without bound. The producer never compresses an aggregate
// larger than the stream's record limit (at most 10 MiB).
const MaxInflated = 16 << 20

// IsCompressed reports whether b has the shape of a compressed aggregate:
// the gzip magic and deflate method, and room for a gzip header and
// trailer.
func IsCompressed(b []byte) bool {
	return len(b) >= gzipFrame && bytes.HasPrefix(b, []byte(gzipMagic))
}

// CompressBound is the largest size [Compressor.Append] makes of n bytes:
// data that does not shrink goes in stored blocks.
func CompressBound(n int) int {
	return n + 5*(n/storedBlock+2) + gzipFrame
}

// Compressor gzips aggregates, reusing its state (about 1 MiB) from one to
// the next. The zero value is ready to use. A Compressor is not safe for
// concurrent use.
type Compressor struct {
	zw  *gzip.Writer
	out appendWriter
}

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// Append appends the compressed form of the aggregate agg (as made by
// [Aggregator.Bytes]) to dst and returns the extended slice; it adds at
// most [CompressBound](len(agg)) bytes. The output depends on agg alone
// (no time or name in the header).
func (c *Compressor) Append(dst, agg []byte) []byte {
	c.out.b = dst
	if c.zw == nil {
		// BestSpeed: the records of one key differ in a few fields, which
		// the fast matcher finds as well as the slow one does.
		c.zw, _ = gzip.NewWriterLevel(&c.out, gzip.BestSpeed)
	} else {
		c.zw.Reset(&c.out)
	}
	// Neither can fail: appendWriter does not.
	_, _ = c.zw.Write(agg)
	_ = c.zw.Close()
	dst = c.out.b
	c.out.b = nil
	return dst
}

// Reader decodes aggregated records, compressed or not, reusing its
// buffers from one record to the next. The zero value is ready to use. A
// Reader is not safe for concurrent use.
type Reader struct {
	zr  *gzip.Reader
	src bytes.Reader
	out bytes.Buffer
}

// AppendDecode appends the user records of b, an aggregated record or a
// compressed one, to dst in order. For a plain aggregate it is the
// package's [AppendDecode]. A compressed one fails with [ErrMalformed]
// when it is not one valid gzip member, inflates to more than
// [MaxInflated] bytes or does not hold an aggregated record, and with the
// errors of [AppendDecode] for the aggregate inside.
//
// The records' Data alias b or the Reader's buffer: copy them before b
// changes or the Reader is used again.
func (r *Reader) AppendDecode(dst []UserRecord, b []byte) ([]UserRecord, error) {
	if !IsCompressed(b) {
		return AppendDecode(dst, b)
	}
	agg, err := r.inflate(b)
	if err != nil {
		return dst, err
	}
	out, err := AppendDecode(dst, agg)
	if errors.Is(err, ErrNotAggregated) {
		return dst, malformed("compressed record does not hold an aggregated record")
	}
	return out, err
}

func (r *Reader) inflate(b []byte) ([]byte, error) {
	r.src.Reset(b)
	var err error
	if r.zr == nil {
		r.zr, err = gzip.NewReader(&r.src)
	} else {
		err = r.zr.Reset(&r.src)
	}
	if err != nil {
		return nil, malformed("gzip header: %v", err)
	}
	r.zr.Multistream(false)
	r.out.Reset()
	n, err := r.out.ReadFrom(io.LimitReader(r.zr, MaxInflated+1))
	switch {
	case err != nil:
		return nil, malformed("gzip: %v", err)
	case n > MaxInflated:
		return nil, malformed("inflates to more than %d bytes", MaxInflated)
	case r.src.Len() > 0:
		return nil, malformed("%d bytes after the gzip member", r.src.Len())
	}
	return r.out.Bytes(), nil
}

// Decode returns the user records of b, an aggregated record or a
// compressed one (see [Reader.AppendDecode]), in order.
func Decode(b []byte) ([]UserRecord, error) {
	var r Reader
	return r.AppendDecode(nil, b)
}
