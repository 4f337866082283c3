package kinesisfake

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

func (s *Server) describeStreamSummary(w http.ResponseWriter, r *http.Request, body []byte) {
	var summary map[string]any
	if s.null != nil {
		var in struct{ StreamName, StreamARN string }
		if err := json.Unmarshal(body, &in); err != nil {
			writeError(w, "SerializationException", err.Error())
			return
		}
		s.mu.Lock()
		code, msg := s.null.checkName(in.StreamName, in.StreamARN)
		summary = s.null.summary()
		s.mu.Unlock()
		if code != "" {
			writeError(w, code, msg)
			return
		}
	} else {
		status, respBody, err := s.roundTrip(r, body)
		if err != nil {
			writeError(w, "InternalFailure", "upstream: "+err.Error())
			return
		}
		if status != http.StatusOK {
			s.relay(w, status, respBody)
			return
		}
		var out struct{ StreamDescriptionSummary map[string]any }
		if err := json.Unmarshal(respBody, &out); err != nil || out.StreamDescriptionSummary == nil {
			s.relay(w, status, respBody)
			return
		}
		summary = out.StreamDescriptionSummary
	}
	s.mu.Lock()
	o := s.overrides
	s.mu.Unlock()
	if o.MaxRecordSizeInKiB != nil {
		summary["MaxRecordSizeInKiB"] = *o.MaxRecordSizeInKiB
	}
	if o.RecordDistributionStrategy != nil {
		summary["RecordDistributionStrategy"] = *o.RecordDistributionStrategy
	}
	if o.StreamMode != nil {
		summary["StreamModeDetails"] = map[string]any{"StreamMode": *o.StreamMode}
	}
	if o.StreamStatus != nil {
		summary["StreamStatus"] = *o.StreamStatus
	}
	b, _ := json.Marshal(map[string]any{"StreamDescriptionSummary": summary})
	writeJSON(w, http.StatusOK, b)
}

// roundTrip sends body to the upstream with the client's headers. The
// upstream call does not follow the client's context: a request the
// client gave up on is still applied, as AWS would.
func (s *Server) roundTrip(r *http.Request, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Accept-Encoding", "Connection":
			continue
		}
		req.Header[k] = v
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (s *Server) relay(w http.ResponseWriter, status int, body []byte) {
	var e struct {
		Type string `json:"__type"`
	}
	if json.Unmarshal(body, &e) == nil && e.Type != "" {
		code := e.Type
		if i := strings.LastIndexByte(code, '#'); i >= 0 {
			code = code[i+1:]
		}
		w.Header().Set("X-Amzn-Errortype", code)
	}
	writeJSON(w, status, body)
}

func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	status, respBody, err := s.roundTrip(r, body)
	if err != nil {
		writeError(w, "InternalFailure", "upstream: "+err.Error())
		return
	}
	s.relay(w, status, respBody)
}
