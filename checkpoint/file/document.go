package file

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// The document on disk:
//
//	{
//	  "format": "cdcbridge-checkpoints",
//	  "version": 1,
//	  "sha256": "<hex of the SHA-256 of the compact checkpoints object>",
//	  "checkpoints": {
//	    "<key>": {"position": "...", "data": {...}, "saved_at": "..."},
//	    ...
//	  }
//	}
//
// Data that is compact JSON is embedded as is, so people can read it; any
// other bytes go to data_base64. The checksum covers the checkpoints
// re-encoded compactly (keys sorted), so whitespace does not matter but any
// change of a value does. Someone who edits the file by hand removes the
// sha256 member; a truncated document never parses, so a missing checksum
// cannot come from a torn write.
const (
	formatName    = "cdcbridge-checkpoints"
	formatVersion = 1
)

type document struct {
	Format      string           `json:"format"`
	Version     int              `json:"version"`
	SHA256      string           `json:"sha256,omitempty"`
	Checkpoints map[string]entry `json:"checkpoints"`
}

type entry struct {
	Position   string          `json:"position"`
	Data       json.RawMessage `json:"data,omitempty"`
	DataBase64 []byte          `json:"data_base64,omitempty"`
	SavedAt    time.Time       `json:"saved_at"`

	gen uint64 // the store generation that set it (in memory only)
}

func newEntry(c checkpoint.Checkpoint, now time.Time) entry {
	e := entry{Position: c.Position, SavedAt: now.UTC().Truncate(time.Millisecond)}
	switch {
	case len(c.Data) == 0:
	case isCompactJSON(c.Data):
		e.Data = bytes.Clone(c.Data)
	default:
		e.DataBase64 = bytes.Clone(c.Data)
	}
	return e
}

func (e entry) checkpoint() checkpoint.Checkpoint {
	c := checkpoint.Checkpoint{Position: e.Position}
	switch {
	case len(e.Data) > 0:
		c.Data = bytes.Clone(e.Data)
	case len(e.DataBase64) > 0:
		c.Data = bytes.Clone(e.DataBase64)
	}
	return c
}

// isCompactJSON reports whether b is valid JSON that json.Marshal would
// write back byte for byte (no insignificant whitespace), so that Load
// returns exactly what Save got.
func isCompactJSON(b []byte) bool {
	if !json.Valid(b) {
		return false
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return false
	}
	if !bytes.Equal(buf.Bytes(), b) {
		return false
	}
	// json.Marshal escapes <, > and & inside strings; keep such data in
	// base64 so the round trip stays exact.
	return !bytes.ContainsAny(b, "<>&") && !bytes.Contains(b, []byte("\u2028")) && !bytes.Contains(b, []byte("\u2029"))
}

func checksum(entries map[string]entry) (string, error) {
	b, err := json.Marshal(entries)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func encodeDocument(entries map[string]entry) ([]byte, error) {
	sum, err := checksum(entries)
	if err != nil {
		return nil, fmt.Errorf("encoding checkpoints: %w", err)
	}
	doc := document{Format: formatName, Version: formatVersion, SHA256: sum, Checkpoints: entries}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding checkpoints: %w", err)
	}
	return append(b, '\n'), nil
}

func decodeDocument(b []byte) (map[string]entry, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("the file is empty (a write that never reached the disk?)")
	}
	var doc document
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a valid checkpoint document: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a valid checkpoint document: data after the document")
	}
	switch {
	case doc.Format != formatName:
		return nil, fmt.Errorf("format %q, want %q", doc.Format, formatName)
	case doc.Version != formatVersion:
		return nil, fmt.Errorf("format version %d, this build reads version %d", doc.Version, formatVersion)
	case doc.Checkpoints == nil:
		return nil, errors.New(`no "checkpoints" member`)
	}
	for k, e := range doc.Checkpoints {
		if k == "" {
			return nil, errors.New("a checkpoint has an empty key")
		}
		if len(e.Data) > 0 && len(e.DataBase64) > 0 {
			return nil, fmt.Errorf("checkpoint %q has both data and data_base64", k)
		}
		if len(e.Data) > 0 {
			// MarshalIndent indented the embedded data; give back the
			// compact form that was saved.
			var buf bytes.Buffer
			if err := json.Compact(&buf, e.Data); err != nil {
				return nil, fmt.Errorf("checkpoint %q: data: %w", k, err)
			}
			e.Data = buf.Bytes()
			doc.Checkpoints[k] = e
		}
	}
	if doc.SHA256 != "" {
		sum, err := checksum(doc.Checkpoints)
		if err != nil {
			return nil, err
		}
		if sum != doc.SHA256 {
			return nil, fmt.Errorf("checksum mismatch (stored %s, computed %s); "+
				"if the file was edited by hand on purpose, remove its sha256 member", doc.SHA256, sum)
		}
	}
	return doc.Checkpoints, nil
}
