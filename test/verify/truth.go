package verify

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// Change is one committed change of a row, as the workload made it. Rows
// carry a version column that every change sets (insert and update: the
// new version; delete: the version of the row deleted), so each change of
// a row is identified by (Table, Key, Op, Ver) and a row's changes are
// ordered by Ver, a delete after the insert or update of the same Ver.
type Change struct {
	Table string // the envelope's subject: "public.items", or the DynamoDB table
	Key   string // CanonicalKey of the key object
	Op    string // insert, update, delete (read for a snapshot row)
	Ver   int64
	// Digest is PayloadDigest of the payload column's value in the image
	// (after; before for a delete); empty leaves the payload unchecked.
	Digest string
	// At is when the workload saw the change commit; zero when unknown.
	// Compare measures lag from it rather than from the event's time
	// (emulators round that: DynamoDB Local to the minute).
	At time.Time
}

func (c Change) row() string { return c.Table + " " + c.Key }

func (c Change) id() string { return fmt.Sprintf("%s %s %s %d", c.Table, c.Key, c.Op, c.Ver) }

// rank orders the changes of one row.
func (c Change) rank() int64 {
	r := c.Ver * 2
	if c.Op == "delete" {
		r++
	}
	return r
}

// Log is the source of truth a workload keeps: every change it committed,
// and optionally the rows' final state read back from the database.
// Methods are safe for concurrent use.
type Log struct {
	// VerColumn and PayloadColumn name the version and payload columns
	// (or DynamoDB attributes); defaults "ver" and "pad".
	VerColumn, PayloadColumn string

	mu       sync.Mutex
	changes  []Change
	existing []Change         // rows (Op "read") that were in the table before the stream began
	final    map[string]int64 // row -> version; absent rows -1
	ignore   map[string]bool  // tables whose events Compare leaves alone
}

// Ignore makes Compare pass over the events of tables (subjects) that the
// caller checks by other means, such as tables without a key.
func (l *Log) Ignore(tables ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ignore == nil {
		l.ignore = map[string]bool{}
	}
	for _, t := range tables {
		l.ignore[t] = true
	}
}

func (l *Log) ignored(table string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ignore[table]
}

// Add records committed changes.
func (l *Log) Add(c ...Change) {
	l.mu.Lock()
	l.changes = append(l.changes, c...)
	l.mu.Unlock()
}

// AddExisting records rows that were in the table before the bridge
// started (their Op is ignored): a read event may carry one of them, or
// any version a committed change gave a row.
func (l *Log) AddExisting(c ...Change) {
	l.mu.Lock()
	l.existing = append(l.existing, c...)
	l.mu.Unlock()
}

// Len returns the number of changes recorded.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.changes)
}

// Changes returns a copy of the recorded changes.
func (l *Log) Changes() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Change(nil), l.changes...)
}

// SetFinal records a row's state in the database after the run: its
// version, or exists=false when it is gone. Compare then checks that the
// row's last change on the stream leaves it in that state.
func (l *Log) SetFinal(table, key string, ver int64, exists bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.final == nil {
		l.final = map[string]int64{}
	}
	if !exists {
		ver = -1
	}
	l.final[table+" "+key] = ver
}

func (l *Log) columns() (ver, payload string) {
	ver, payload = l.VerColumn, l.PayloadColumn
	if ver == "" {
		ver = "ver"
	}
	if payload == "" {
		payload = "pad"
	}
	return ver, payload
}

// CanonicalKey is the form of a key object Change.Key holds: JSON with
// sorted member names and numbers as written.
func CanonicalKey(key map[string]any) string {
	b, err := json.Marshal(key)
	if err != nil {
		panic(fmt.Sprintf("verify: key %v: %v", key, err))
	}
	return string(b)
}

// canonicalJSON re-encodes a JSON object in CanonicalKey's form.
func canonicalJSON(raw json.RawMessage) (string, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return "", err
	}
	return CanonicalKey(m), nil
}

// PayloadDigest is the digest a Change holds for a payload value.
func PayloadDigest(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// identify derives the change an envelope reports.
func (l *Log) identify(e *Envelope) (Change, string, error) {
	verCol, payCol := l.columns()
	c := Change{Table: e.Subject, Op: e.Op}
	if e.Key == nil {
		return c, "", fmt.Errorf("event %s has no key", e.ID)
	}
	key, err := canonicalJSON(e.Key)
	if err != nil {
		return c, "", fmt.Errorf("event %s: key: %w", e.ID, err)
	}
	c.Key = key
	img := e.After
	if e.Op == "delete" {
		img = e.Before
	}
	if img == nil {
		return c, "", fmt.Errorf("event %s (%s) has no row image to take the version from", e.ID, e.Op)
	}
	d := json.NewDecoder(bytes.NewReader(img))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return c, "", fmt.Errorf("event %s: image: %w", e.ID, err)
	}
	n, ok := m[verCol].(json.Number)
	if !ok {
		return c, "", fmt.Errorf("event %s: image without a numeric %s", e.ID, verCol)
	}
	if c.Ver, err = n.Int64(); err != nil {
		return c, "", fmt.Errorf("event %s: %s: %w", e.ID, verCol, err)
	}
	digest := ""
	if s, ok := m[payCol].(string); ok {
		digest = PayloadDigest(s)
	}
	return c, digest, nil
}
