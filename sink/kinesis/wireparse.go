package kinesis

import (
	"encoding/json"
	"errors"
	"fmt"
)

// parsePutRecordsOutput fills b.res from a PutRecords answer, matching
// entries to the request by position. Shard ids equal to the predicted
// shard's reuse its string, so a normal answer allocates nothing per entry.
func parsePutRecordsOutput(data []byte, b *batch) error {
	s := scanner{b: data}
	b.res = b.res[:0]
	sawRecords := false
	err := s.object(func(key []byte) error {
		if string(key) != "Records" {
			return s.skip()
		}
		sawRecords = true
		return s.records(b)
	})
	if err != nil {
		return err
	}
	if !sawRecords {
		return errors.New("answer has no Records")
	}
	if len(b.res) != len(b.entries) {
		return fmt.Errorf("answer has %d entries for %d records", len(b.res), len(b.entries))
	}
	return nil
}

func (s *scanner) records(b *batch) error {
	if err := s.expect('['); err != nil {
		return err
	}
	s.ws()
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for {
		var res entryResult
		var hasSeq bool
		var want string
		if n := len(b.res); n < len(b.info) {
			want = b.info[n].shard.id
		}
		err := s.object(func(key []byte) error {
			s.ws()
			if s.peek() == 'n' { // null
				return s.skip()
			}
			switch string(key) {
			case "SequenceNumber":
				hasSeq = true
				return s.skip()
			case "ShardId", "ErrorCode", "ErrorMessage":
			default:
				return s.skip()
			}
			v, esc, err := s.str()
			if err != nil {
				return err
			}
			val := ""
			switch {
			case esc:
				var u string
				if err := json.Unmarshal(s.b[s.last:s.i], &u); err != nil {
					return err
				}
				val = u
			case string(key) == "ShardId" && string(v) == want:
				val = want
			default:
				val = string(v)
			}
			switch string(key) {
			case "ShardId":
				res.shardID = val
			case "ErrorCode":
				res.code = val
			default:
				res.msg = val
			}
			return nil
		})
		if err != nil {
			return err
		}
		if res.code == "" && (res.shardID == "" || !hasSeq) {
			// Never take an entry for accepted without its proof.
			res.code = "MissingResult"
			res.msg = "the answer's entry has neither an error code nor a shard id and sequence number"
		}
		b.res = append(b.res, res)
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case ']':
			s.i++
			return nil
		default:
			return s.errorf("expected , or ] in Records")
		}
	}
}

// scanner reads just enough JSON for the PutRecords answer.
type scanner struct {
	b    []byte
	i    int
	last int // start of the last string read, quote included
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("PutRecords answer at byte %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) expect(c byte) error {
	s.ws()
	if s.peek() != c {
		return s.errorf("expected %q", c)
	}
	s.i++
	return nil
}

// object reads an object, calling member with each member's key to read
// its value.
func (s *scanner) object(member func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	for first := true; ; first = false {
		s.ws()
		if s.peek() == '}' {
			s.i++
			return nil
		}
		if !first {
			if err := s.expect(','); err != nil {
				return err
			}
		}
		key, _, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
	}
}

// str reads a string and returns its raw content and whether it holds escapes.
func (s *scanner) str() ([]byte, bool, error) {
	s.ws()
	if s.peek() != '"' {
		return nil, false, s.errorf("expected a string")
	}
	s.last = s.i
	s.i++
	start, esc := s.i, false
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			esc = true
			s.i += 2
			continue
		case '"':
			v := s.b[start:s.i]
			s.i++
			return v, esc, nil
		}
		s.i++
	}
	return nil, false, s.errorf("unterminated string")
}

// skip passes over one value of any kind.
func (s *scanner) skip() error {
	s.ws()
	switch c := s.peek(); c {
	case '"':
		_, _, err := s.str()
		return err
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, _, err := s.str(); err != nil {
					return err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return nil
				}
			}
			s.i++
		}
		return s.errorf("unterminated value")
	case 0:
		return s.errorf("unexpected end")
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return nil
			}
			s.i++
		}
		return nil
	}
}
