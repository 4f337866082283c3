package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cdcbridge/cdcbridge/kpl"
)

// request is one PutRecords request being handled; its buffers are reused.
type request struct {
	body    []byte
	data    []byte // decoded record data, all entries back to back
	entries []entry
	name    string
	arn     string
	users   []kpl.UserRecord
	rd      kpl.Reader // inflates compressed aggregates
	hashes  []uint64
	order   []orderKey // with -check-order: each user record's key and sequence
	resp    []byte
}

type entry struct {
	data   []byte // into request.data
	pk     []byte // into request.body, or unescaped
	ehk    []byte
	hasEHK bool
	shard  string
	seq    uint64
}

var errSyntax = errors.New("malformed JSON")

// parse reads {"Records":[{"Data":..., "PartitionKey":..., "ExplicitHashKey":...}, ...],
// "StreamName":..., "StreamARN":...} in any key order.
func (q *request) parse() (code, msg string) {
	q.entries, q.name, q.arn = q.entries[:0], "", ""
	if need := base64.StdEncoding.DecodedLen(len(q.body)); cap(q.data) < need {
		q.data = make([]byte, 0, need)
	}
	q.data = q.data[:0]
	s := scanner{b: q.body}
	err := s.object(func(key []byte) error {
		switch string(key) {
		case "Records":
			return s.array(func() error { return q.entry(&s) })
		case "StreamName":
			v, err := s.str()
			q.name = string(v)
			return err
		case "StreamARN":
			v, err := s.str()
			q.arn = string(v)
			return err
		default:
			return s.skip()
		}
	})
	if err == nil && s.ws() < len(s.b) {
		err = errSyntax
	}
	if err != nil {
		return "SerializationException", err.Error()
	}
	return "", ""
}

func (q *request) entry(s *scanner) error {
	var e entry
	err := s.object(func(key []byte) error {
		switch string(key) {
		case "Data":
			v, err := s.str()
			if err != nil {
				return err
			}
			start := len(q.data)
			q.data = q.data[:start+base64.StdEncoding.DecodedLen(len(v))]
			k, err := base64.StdEncoding.Decode(q.data[start:], v)
			if err != nil {
				return fmt.Errorf("Data: %w", err)
			}
			q.data = q.data[:start+k]
			e.data = q.data[start : start+k : start+k]
			return nil
		case "PartitionKey":
			v, err := s.str()
			e.pk = v
			return err
		case "ExplicitHashKey":
			v, err := s.str()
			e.ehk, e.hasEHK = v, true
			return err
		default:
			return s.skip()
		}
	})
	q.entries = append(q.entries, e)
	return err
}

// scanner reads the JSON of a PutRecords request.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() int {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\n' || s.b[s.i] == '\r' || s.b[s.i] == '\t') {
		s.i++
	}
	return s.i
}

func (s *scanner) expect(c byte) bool {
	if s.ws() < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string; an escaped one is unescaped into a new slice.
func (s *scanner) str() ([]byte, error) {
	if !s.expect('"') {
		return nil, errSyntax
	}
	start, escaped := s.i, false
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i += 2
			continue
		case '"':
			v := s.b[start:s.i]
			s.i++
			if !escaped {
				return v, nil
			}
			var out string
			if err := json.Unmarshal(s.b[start-1:s.i], &out); err != nil {
				return nil, err
			}
			return []byte(out), nil
		}
		s.i++
	}
	return nil, errSyntax
}

func (s *scanner) object(field func(key []byte) error) error {
	if !s.expect('{') {
		return errSyntax
	}
	if s.expect('}') {
		return nil
	}
	for {
		key, err := s.str()
		if err != nil {
			return err
		}
		if !s.expect(':') {
			return errSyntax
		}
		if err := field(key); err != nil {
			return err
		}
		if s.expect(',') {
			continue
		}
		if s.expect('}') {
			return nil
		}
		return errSyntax
	}
}

func (s *scanner) array(elem func() error) error {
	if !s.expect('[') {
		return errSyntax
	}
	if s.expect(']') {
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if s.expect(',') {
			continue
		}
		if s.expect(']') {
			return nil
		}
		return errSyntax
	}
}

// skip passes over any value with the standard decoder.
func (s *scanner) skip() error {
	d := json.NewDecoder(bytes.NewReader(s.b[s.ws():]))
	var v json.RawMessage
	if err := d.Decode(&v); err != nil {
		return err
	}
	s.i += int(d.InputOffset())
	return nil
}
