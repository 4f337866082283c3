package cdc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxPartitionKeyBytes is Kinesis's partition key limit (256 characters; a
// key within 256 bytes of UTF-8 is always within it).
const MaxPartitionKeyBytes = 256

// PartitionKey returns the partition key for a row of table whose primary
// key values, in key-column order, are the canonical JSON array keyArray
// (no insignificant whitespace), e.g. `public.orders:[42]`.
//
// Keys longer than MaxPartitionKeyBytes become table + ":sha256:" + the
// first 32 hex digits of the SHA-256 of the full form, the table name cut
// (on a character boundary) so the whole fits. The mapping is deterministic,
// so the same row always lands on the same key.
func PartitionKey(table string, keyArray []byte) string {
	if !utf8.ValidString(table) {
		// A table name in a non-UTF-8 database (SQL_ASCII): Kinesis takes
		// only UTF-8 keys, and the same name must always give the same key.
		table = strings.ToValidUTF8(table, "\uFFFD")
	}
	n := len(table) + 1 + len(keyArray)
	if n <= MaxPartitionKeyBytes {
		var b strings.Builder
		b.Grow(n)
		b.WriteString(table)
		b.WriteByte(':')
		b.Write(keyArray)
		return b.String()
	}
	h := sha256.New()
	h.Write([]byte(table))
	h.Write([]byte{':'})
	h.Write(keyArray)
	sum := h.Sum(nil)
	return HashedPartitionKey(table, hex.EncodeToString(sum[:16]))
}

// HashedPartitionKey returns table + ":sha256:" + hexDigest with the table
// cut so the result fits in MaxPartitionKeyBytes.
func HashedPartitionKey(table, hexDigest string) string {
	suffix := ":sha256:" + hexDigest
	room := MaxPartitionKeyBytes - len(suffix)
	if len(table) > room {
		table = cutUTF8(table, room)
	}
	return table + suffix
}

// TablePartitionKey is the partition key of tables ordered as a whole
// (no primary key) and of truncate events: table + ":*".
func TablePartitionKey(table string) string {
	return PartitionKey(table, []byte("*"))
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not
// split a character.
func cutUTF8(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// FormatLSN writes a PostgreSQL LSN in its usual X/X form.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}

// ChangeID is the id (and sequence) of a Postgres change: commit LSN as 16
// upper-case hex digits, ':', the 1-based ordinal in its transaction as 8
// decimal digits.
func ChangeID(commitLSN uint64, ordinal uint32) string {
	b := make([]byte, 0, 25)
	b = appendHex16(b, commitLSN)
	b = append(b, ':')
	return string(appendPad(b, uint64(ordinal), 8))
}

// SnapshotID is the id of a snapshot row: 'S' + the consistent point (16
// hex), ':', the table, ':', a hash of the row's partition key.
func SnapshotID(consistentPoint uint64, table, partitionKey string) string {
	sum := sha256.Sum256([]byte(partitionKey))
	b := make([]byte, 0, 1+16+2+len(table)+32)
	b = append(b, 'S')
	b = appendHex16(b, consistentPoint)
	b = append(b, ':')
	b = append(b, table...)
	b = append(b, ':')
	b = hex.AppendEncode(b, sum[:16])
	return string(b)
}

// SnapshotSequence is the sequence of every snapshot row: it sorts before
// every change streamed after the consistent point.
func SnapshotSequence(consistentPoint uint64) string {
	return string(appendHex16(nil, consistentPoint)) + ":00000000"
}

// MessageID is the id of a non-transactional logical decoding message.
func MessageID(lsn uint64) string {
	return string(appendHex16(nil, lsn)) + ":M"
}

// PadSequence zero-pads a DynamoDB Streams sequence number (21 to 40
// decimal digits) to 40 digits so that it sorts as a string.
func PadSequence(seq string) (string, error) {
	if len(seq) == 0 || len(seq) > 40 {
		return "", fmt.Errorf("sequence number %q: want 1 to 40 digits", seq)
	}
	for i := 0; i < len(seq); i++ {
		if seq[i] < '0' || seq[i] > '9' {
			return "", fmt.Errorf("sequence number %q: not decimal", seq)
		}
	}
	return strings.Repeat("0", 40-len(seq)) + seq, nil
}

const hexDigits = "0123456789ABCDEF"

func appendHex16(b []byte, v uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(v>>uint(shift))&0xF])
	}
	return b
}

func appendPad(b []byte, v uint64, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendUint(tmp[:0], v, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}
