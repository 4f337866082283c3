package kinesisfake

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
)

// targetPrefix starts the X-Amz-Target header of every Kinesis operation.
const targetPrefix = "Kinesis_20131202."

const contentType = "application/x-amz-json-1.1"

type putRecordsInput struct {
	StreamName string                 `json:"StreamName,omitempty"`
	StreamARN  string                 `json:"StreamARN,omitempty"`
	Records    []putRecordsInputEntry `json:"Records"`
}

type putRecordsInputEntry struct {
	Data            []byte  `json:"Data"`
	PartitionKey    string  `json:"PartitionKey"`
	ExplicitHashKey *string `json:"ExplicitHashKey,omitempty"`
}

type putRecordsOutput struct {
	FailedRecordCount int                     `json:"FailedRecordCount"`
	Records           []putRecordsOutputEntry `json:"Records"`
	EncryptionType    string                  `json:"EncryptionType,omitempty"`
}

type putRecordsOutputEntry struct {
	ShardId        string `json:"ShardId,omitempty"`
	SequenceNumber string `json:"SequenceNumber,omitempty"`
	ErrorCode      string `json:"ErrorCode,omitempty"`
	ErrorMessage   string `json:"ErrorMessage,omitempty"`
}

// appendPutRecordsOutput writes the response by hand: the null endpoint
// answers hundreds of thousands of entries a second.
func appendPutRecordsOutput(b []byte, out *putRecordsOutput) []byte {
	b = append(b, `{"FailedRecordCount":`...)
	b = strconv.AppendInt(b, int64(out.FailedRecordCount), 10)
	b = append(b, `,"Records":[`...)
	for i, e := range out.Records {
		if i > 0 {
			b = append(b, ',')
		}
		if e.ErrorCode != "" {
			b = append(b, `{"ErrorCode":`...)
			b = strconv.AppendQuote(b, e.ErrorCode)
			b = append(b, `,"ErrorMessage":`...)
			b = strconv.AppendQuote(b, e.ErrorMessage)
			b = append(b, '}')
			continue
		}
		b = append(b, `{"SequenceNumber":"`...)
		b = append(b, e.SequenceNumber...)
		b = append(b, `","ShardId":"`...)
		b = append(b, e.ShardId...)
		b = append(b, `"}`...)
	}
	return append(b, "]}"...)
}

var requestIDs atomic.Uint64

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Amzn-Requestid", "fake-"+strconv.FormatUint(requestIDs.Add(1), 10))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// errorStatus is the HTTP status AWS uses for an error code.
func errorStatus(code string) int {
	switch code {
	case "InternalFailure", "InternalFailureException", "InternalServerError":
		return http.StatusInternalServerError
	case "ServiceUnavailable", "ServiceUnavailableException":
		return http.StatusServiceUnavailable
	case "ThrottlingException", "TooManyRequestsException":
		return http.StatusBadRequest
	}
	return http.StatusBadRequest
}

func writeError(w http.ResponseWriter, code, message string) {
	body, _ := json.Marshal(map[string]string{"__type": code, "message": message})
	w.Header().Set("X-Amzn-Errortype", code)
	writeJSON(w, errorStatus(code), body)
}
