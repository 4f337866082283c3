package verify

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// DLQEntry is one line of a dead-letter file:
//
//	{"reason":"...","stream":"...","bytes":N,"time":"...","envelope":{...}}
type DLQEntry struct {
	File   string // base name
	Line   int    // 1-based
	Reason string
	Bytes  int
	Env    *Envelope // nil when Err is set
	Err    error
}

// Ref is the entry's reference as placeholders carry it: file#line.
func (e *DLQEntry) Ref() string { return e.File + "#" + strconv.Itoa(e.Line) }

// DLQ is the content of a dead-letter directory.
type DLQ struct {
	Entries []DLQEntry
	byRef   map[string]*DLQEntry
}

// ReadDLQ reads every dlq-*.jsonl file of dir. A directory that does not
// exist is empty.
func ReadDLQ(dir string) (*DLQ, error) {
	d := &DLQ{byRef: map[string]*DLQEntry{}}
	if dir == "" {
		return d, nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "dlq-*.jsonl"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	for _, f := range files {
		if err := d.readFile(f); err != nil {
			return nil, err
		}
	}
	for i := range d.Entries {
		d.byRef[d.Entries[i].Ref()] = &d.Entries[i]
	}
	return d, nil
}

func (d *DLQ) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("dead-letter file: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		e := DLQEntry{File: filepath.Base(path), Line: n}
		var raw struct {
			Reason   string          `json:"reason"`
			Bytes    int             `json:"bytes"`
			Envelope json.RawMessage `json:"envelope"`
		}
		if line[len(line)-1] != '\n' {
			e.Err = errors.New("last line is not terminated (torn write)")
		} else if jerr := json.Unmarshal(line, &raw); jerr != nil {
			e.Err = fmt.Errorf("not a JSON object: %w", jerr)
		} else if e.Env, jerr = parseEnvelope(raw.Envelope); jerr != nil {
			e.Err = jerr
		}
		e.Reason, e.Bytes = raw.Reason, raw.Bytes
		d.Entries = append(d.Entries, e)
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// resolve returns the dead-letter entry a placeholder points to, or why
// it matches none.
func (d *DLQ) resolve(ph *Envelope) (*DLQEntry, error) {
	if d == nil {
		return nil, fmt.Errorf("placeholder %s points to %s, but no dead-letter directory was read", ph.ID, ph.Oversize.DLQ)
	}
	e, ok := d.byRef[ph.Oversize.DLQ]
	switch {
	case !ok:
		return nil, fmt.Errorf("placeholder %s points to %s, which does not exist", ph.ID, ph.Oversize.DLQ)
	case e.Err != nil:
		return nil, fmt.Errorf("placeholder %s points to %s, which is not readable: %v", ph.ID, ph.Oversize.DLQ, e.Err)
	case e.Env.ID != ph.ID || e.Env.Source != ph.Source || e.Env.Sequence != ph.Sequence:
		return nil, fmt.Errorf("placeholder %s points to %s, which holds event %s", ph.ID, ph.Oversize.DLQ, e.Env.ID)
	}
	return e, nil
}
