package kinesisfake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cdcbridge/cdcbridge/hashkey"
	"github.com/cdcbridge/cdcbridge/kpl"
)

// maxRecordBytes is the record limit (data plus partition key) enforced.
func (s *Server) maxRecordBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overrides.MaxRecordSizeInKiB != nil {
		return int(*s.overrides.MaxRecordSizeInKiB) << 10
	}
	return 1 << 20
}

// checkLimits returns the error AWS gives a request over its limits.
func (s *Server) checkLimits(in *putRecordsInput) (code, msg string) {
	if len(in.Records) == 0 || len(in.Records) > s.limits.MaxRecords {
		return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records' failed to satisfy constraint: Member must have length between 1 and %d (got %d)", s.limits.MaxRecords, len(in.Records))
	}
	maxRecord := s.maxRecordBytes()
	total := 0
	for i, e := range in.Records {
		n := len([]rune(e.PartitionKey))
		if n < 1 || n > s.limits.MaxKeyLen {
			return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.partitionKey' failed to satisfy constraint: Member must have length between 1 and %d", i+1, s.limits.MaxKeyLen)
		}
		size := len(e.Data) + len(e.PartitionKey)
		if size > maxRecord {
			return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.data' failed to satisfy constraint: record of %d bytes (data and partition key) exceeds %d", i+1, size, maxRecord)
		}
		if e.ExplicitHashKey != nil {
			if _, ok := parseHashKey(*e.ExplicitHashKey); !ok {
				return "InvalidArgumentException", "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was " + *e.ExplicitHashKey
			}
		}
		total += size
	}
	if total > s.limits.MaxRequestBytes {
		return "InvalidArgumentException", fmt.Sprintf("Records size exceeds %d bytes limit (got %d)", s.limits.MaxRequestBytes, total)
	}
	return "", ""
}

func (s *Server) putRecords(w http.ResponseWriter, r *http.Request, body []byte, f Faults) {
	s.c.putRequests.Add(1)
	var in putRecordsInput
	if err := json.Unmarshal(body, &in); err != nil {
		s.c.rejected.Add(1)
		writeError(w, "SerializationException", err.Error())
		return
	}
	s.c.entries.Add(int64(len(in.Records)))
	if code, msg := s.checkLimits(&in); code != "" {
		s.c.rejected.Add(1)
		writeError(w, code, msg)
		return
	}
	if len(f.Poison) > 0 {
		var rd kpl.Reader
		for i, e := range in.Records {
			if poisoned(&rd, e.Data, f.Poison) {
				s.c.rejected.Add(1)
				writeError(w, "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.data' failed to satisfy constraint: injected poison record", i+1))
				return
			}
		}
	}
	if s.chance(f.FailRequests) {
		s.c.failedRequests.Add(1)
		code := f.RequestError
		if code == "" {
			code = "InternalFailure"
		}
		writeError(w, code, "injected "+code)
		return
	}
	if f.Delay > 0 && s.chance(f.SlowRequests) {
		s.c.slow.Add(1)
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
			return
		}
	}

	// Entries picked for an injected failure are not applied.
	out := putRecordsOutput{Records: make([]putRecordsOutputEntry, len(in.Records))}
	apply := make([]int, 0, len(in.Records))
	for i := range in.Records {
		switch {
		case s.chance(f.ThrottleEntries):
			out.Records[i] = putRecordsOutputEntry{ErrorCode: "ProvisionedThroughputExceededException",
				ErrorMessage: "Rate exceeded for shard in stream under account 000000000000. (injected)"}
		case s.chance(f.FailEntries):
			out.Records[i] = putRecordsOutputEntry{ErrorCode: "InternalFailure", ErrorMessage: "Internal service failure. (injected)"}
		default:
			apply = append(apply, i)
			continue
		}
		out.FailedRecordCount++
		s.c.failedEntries.Add(1)
	}

	if len(apply) > 0 {
		var ok bool
		if s.null != nil {
			ok = s.applyNull(w, &in, apply, &out)
		} else {
			ok = s.applyUpstream(w, r, &in, apply, &out)
		}
		if !ok {
			return
		}
	}

	resp := appendPutRecordsOutput(make([]byte, 0, 64+len(out.Records)*100), &out)
	if len(apply) > 0 && s.chance(f.LoseResponses) {
		s.c.lost.Add(1)
		s.lose(w, r, f.LoseMode, resp)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// applyNull routes and accepts the picked entries on the null stream.
func (s *Server) applyNull(w http.ResponseWriter, in *putRecordsInput, apply []int, out *putRecordsOutput) bool {
	s.mu.Lock()
	if code, msg := s.null.checkName(in.StreamName, in.StreamARN); code != "" {
		s.mu.Unlock()
		writeError(w, code, msg)
		return false
	}
	if st := s.null.status; st != "ACTIVE" && st != "UPDATING" {
		s.mu.Unlock()
		writeError(w, "ResourceNotFoundException", "Stream "+s.null.name+" is "+st)
		return false
	}
	for _, i := range apply {
		e := &in.Records[i]
		var h hashkey.Key
		if e.ExplicitHashKey != nil {
			h, _ = parseHashKey(*e.ExplicitHashKey)
		} else {
			h = hashkey.Of(e.PartitionKey)
		}
		sh := s.null.route(h)
		out.Records[i] = putRecordsOutputEntry{ShardId: sh.id, SequenceNumber: s.null.nextSeq()}
	}
	s.mu.Unlock()
	s.accept(in, apply, out)
	return true
}

// applyUpstream sends the picked entries upstream and merges the answer.
func (s *Server) applyUpstream(w http.ResponseWriter, r *http.Request, in *putRecordsInput, apply []int, out *putRecordsOutput) bool {
	sub := putRecordsInput{StreamName: in.StreamName, StreamARN: in.StreamARN, Records: make([]putRecordsInputEntry, len(apply))}
	for j, i := range apply {
		sub.Records[j] = in.Records[i]
	}
	body, _ := json.Marshal(&sub)
	status, respBody, err := s.roundTrip(r, body)
	if err != nil {
		s.c.upstreamErrors.Add(1)
		writeError(w, "InternalFailure", "upstream: "+err.Error())
		return false
	}
	if status != http.StatusOK {
		s.c.upstreamErrors.Add(1)
		s.relay(w, status, respBody)
		return false
	}
	var up putRecordsOutput
	if err := json.Unmarshal(respBody, &up); err != nil || len(up.Records) != len(apply) {
		s.c.upstreamErrors.Add(1)
		writeError(w, "InternalFailure", fmt.Sprintf("upstream answer does not match the request (%v)", err))
		return false
	}
	for j, i := range apply {
		out.Records[i] = up.Records[j]
		if up.Records[j].ErrorCode != "" {
			out.FailedRecordCount++
		}
	}
	s.accept(in, apply, out)
	return true
}

// accept counts, keeps and reports the successful entries among apply.
func (s *Server) accept(in *putRecordsInput, apply []int, out *putRecordsOutput) {
	keep := s.opts.Keep || s.opts.OnAccept != nil
	var (
		scratch []kpl.UserRecord
		rd      kpl.Reader
	)
	var users, userBytes, aggs int64
	if keep {
		s.acceptMu.Lock()
		defer s.acceptMu.Unlock()
	}
	for _, i := range apply {
		o := &out.Records[i]
		if o.ErrorCode != "" {
			continue
		}
		e := &in.Records[i]
		rec := Record{ShardID: o.ShardId, SequenceNumber: o.SequenceNumber, PartitionKey: e.PartitionKey, Data: e.Data}
		if e.ExplicitHashKey != nil {
			rec.ExplicitHashKey = *e.ExplicitHashKey
		}
		if zipped := kpl.IsCompressed(e.Data); zipped || kpl.IsAggregated(e.Data) {
			var err error
			scratch, err = rd.AppendDecode(scratch[:0], e.Data)
			if err != nil {
				s.c.decodeErrors.Add(1)
			} else {
				aggs++
				rec.Aggregated = true
				rec.Compressed = zipped
				users += int64(len(scratch))
				for _, u := range scratch {
					userBytes += int64(len(u.Data))
				}
				if keep {
					rec.Users = append([]kpl.UserRecord(nil), scratch...)
					if rec.Compressed {
						// Their data is in the reader's buffer.
						for i := range rec.Users {
							rec.Users[i].Data = bytes.Clone(rec.Users[i].Data)
						}
					}
				}
			}
		} else {
			users++
			userBytes += int64(len(e.Data))
			if keep {
				rec.Users = []kpl.UserRecord{{PartitionKey: e.PartitionKey, Data: e.Data}}
			}
		}
		s.c.accepted.Add(1)
		if keep {
			if s.opts.Keep {
				s.kept = append(s.kept, rec)
			}
			if s.opts.OnAccept != nil {
				s.opts.OnAccept(rec)
			}
		}
	}
	s.c.userRecords.Add(users)
	s.c.userBytes.Add(userBytes)
	s.c.aggregates.Add(aggs)
}

// lose applies the chosen way of losing an answer.
func (s *Server) lose(w http.ResponseWriter, r *http.Request, mode LoseMode, resp []byte) {
	if mode == Hang {
		t := time.NewTimer(5 * time.Minute)
		defer t.Stop()
		select {
		case <-r.Context().Done():
		case <-s.closing:
		case <-t.C:
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	switch mode {
	case Truncate:
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", contentType, len(resp))
		_, _ = buf.Write(resp[:len(resp)/2])
		_ = buf.Flush()
	default:
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
	}
	_ = conn.Close()
}

// poisoned reports whether data, or a user record inside it when it is a
// compressed aggregate, contains poison.
func poisoned(rd *kpl.Reader, data, poison []byte) bool {
	if !kpl.IsCompressed(data) {
		return bytes.Contains(data, poison)
	}
	users, err := rd.AppendDecode(nil, data)
	if err != nil {
		return false
	}
	for _, u := range users {
		if bytes.Contains(u.Data, poison) {
			return true
		}
	}
	return false
}
