package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	ce "github.com/cloudevents/sdk-go/v2/event"
)

// Envelope is the verifier's own reading of one cdcbridge event, parsed
// and checked against the contract in DESIGN.md ("The event on the wire"),
// not with the cdc package's decoder.
type Envelope struct {
	ID, Source, Type, Subject string
	Time                      time.Time // zero when absent
	PartitionKey, Sequence    string
	Op                        string
	Key, Before, After        json.RawMessage // nil when null or absent
	UnchangedToast            []string
	Oversize                  *Oversize // set on placeholders of dead-lettered records
}

// Oversize is data.oversize of a placeholder.
type Oversize struct {
	Bytes int    `json:"bytes"`
	DLQ   string `json:"dlq"`
}

// IsPlaceholder reports whether e stands in for a dead-lettered record.
func (e *Envelope) IsPlaceholder() bool { return e.Oversize != nil }

var (
	validOps = map[string]bool{"insert": true, "update": true, "delete": true, "truncate": true, "read": true, "message": true}
	dlqRef   = regexp.MustCompile(`^[^#/]+#[1-9][0-9]*$`)
)

// parseEnvelope checks b against the envelope contract and, as a second
// opinion, against the CloudEvents SDK's own validation.
func parseEnvelope(b []byte) (*Envelope, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("envelope is not valid UTF-8")
	}
	var raw struct {
		SpecVersion     *string         `json:"specversion"`
		ID              string          `json:"id"`
		Source          string          `json:"source"`
		Type            string          `json:"type"`
		Subject         string          `json:"subject"`
		Time            string          `json:"time"`
		DataContentType string          `json:"datacontenttype"`
		PartitionKey    string          `json:"partitionkey"`
		Sequence        string          `json:"sequence"`
		Data            json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("envelope is not a JSON object: %w", err)
	}
	var data struct {
		Op             string          `json:"op"`
		Key            json.RawMessage `json:"key"`
		Before         json.RawMessage `json:"before"`
		After          json.RawMessage `json:"after"`
		UnchangedToast []string        `json:"unchanged_toast"`
		Message        json.RawMessage `json:"message"`
		Oversize       *Oversize       `json:"oversize"`
	}
	if len(raw.Data) == 0 || string(raw.Data) == "null" {
		return nil, fmt.Errorf("envelope %q has no data", raw.ID)
	}
	if err := json.Unmarshal(raw.Data, &data); err != nil {
		return nil, fmt.Errorf("envelope %q: data is not an object: %w", raw.ID, err)
	}
	e := &Envelope{ID: raw.ID, Source: raw.Source, Type: raw.Type, Subject: raw.Subject,
		PartitionKey: raw.PartitionKey, Sequence: raw.Sequence, Op: data.Op,
		Key: nonNull(data.Key), Before: nonNull(data.Before), After: nonNull(data.After),
		UnchangedToast: data.UnchangedToast, Oversize: data.Oversize}
	bad := func(format string, args ...any) (*Envelope, error) {
		return nil, fmt.Errorf("envelope %q: %s", raw.ID, fmt.Sprintf(format, args...))
	}
	switch {
	case raw.SpecVersion == nil || *raw.SpecVersion != "1.0":
		return bad("specversion is not 1.0")
	case raw.ID == "":
		return bad("missing id")
	case raw.Source == "":
		return bad("missing source")
	case !validOps[data.Op]:
		return bad("unknown data.op %q", data.Op)
	case raw.Type != "io.cdcbridge."+data.Op:
		return bad("type %q does not match data.op %q", raw.Type, data.Op)
	case raw.DataContentType != "application/json":
		return bad("datacontenttype %q", raw.DataContentType)
	case raw.PartitionKey == "":
		return bad("missing partitionkey")
	case utf8.RuneCountInString(raw.PartitionKey) > 256:
		return bad("partitionkey of %d characters (Kinesis allows 256)", utf8.RuneCountInString(raw.PartitionKey))
	case raw.Sequence == "" && data.Op != "message":
		return bad("missing sequence")
	}
	if raw.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, raw.Time)
		if err != nil {
			return bad("time %q is not RFC 3339", raw.Time)
		}
		e.Time = t
	}
	if e.Oversize != nil {
		switch {
		case e.Oversize.Bytes <= 0:
			return bad("placeholder with oversize.bytes %d", e.Oversize.Bytes)
		case !dlqRef.MatchString(e.Oversize.DLQ):
			return bad("placeholder with oversize.dlq %q (want file#line)", e.Oversize.DLQ)
		case e.Before != nil || e.After != nil:
			return bad("placeholder carries row images")
		}
	} else {
		switch data.Op {
		case "insert", "read":
			if !isObject(e.After) || e.Before != nil {
				return bad("%s without an after image, or with a before image", data.Op)
			}
		case "update":
			if !isObject(e.After) || (e.Before != nil && !isObject(e.Before)) {
				return bad("update without an after image")
			}
		case "delete":
			if e.After != nil || (e.Before != nil && !isObject(e.Before)) {
				return bad("delete with an after image")
			}
		case "message":
			if !isObject(nonNull(data.Message)) {
				return bad("message event without data.message")
			}
		}
		// A row has its key, unless its table has none: such a table
		// (REPLICA IDENTITY FULL, or inserts only) is ordered as a whole,
		// under the partition key schema.table:*.
		if (data.Op == "insert" || data.Op == "update" || data.Op == "delete" || data.Op == "read") && !isObject(e.Key) &&
			!(e.Key == nil && strings.HasSuffix(raw.PartitionKey, ":*")) {
			return bad("%s without a key object", data.Op)
		}
	}
	if data.Op != "message" && raw.Subject == "" {
		return bad("missing subject")
	}
	// A second, independent opinion on the CloudEvents side.
	var ev ce.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return bad("CloudEvents SDK cannot read it: %v", err)
	}
	if err := ev.Validate(); err != nil {
		return bad("CloudEvents SDK rejects it: %v", err)
	}
	return e, nil
}

func nonNull(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}

func isObject(r json.RawMessage) bool {
	for _, c := range r {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c == '{'
	}
	return false
}
