package kinesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// ErrClosed is returned by Put and Flush once Run has returned.
var ErrClosed = errors.New("kinesis producer stopped")

// errClass is what the producer does about an error.
type errClass int

const (
	// classRetry: retry with backoff, without limit.
	classRetry errClass = iota
	// classThrottle: like classRetry, reported as throttling.
	classThrottle
	// classExpired: the credentials expired: refresh them and retry.
	classExpired
	// classInvalid: the request was rejected as invalid: split it to
	// isolate the offending record.
	classInvalid
	// classFatal: no retry can fix it; stop.
	classFatal
)

var codeClass = map[string]errClass{
	"ProvisionedThroughputExceededException": classThrottle,
	"ThrottlingException":                    classThrottle,
	"Throttling":                             classThrottle,
	"ThrottledException":                     classThrottle,
	"LimitExceededException":                 classThrottle,
	"RequestLimitExceeded":                   classThrottle,
	"TooManyRequestsException":               classThrottle,
	"KMSThrottlingException":                 classThrottle,
	"SlowDown":                               classThrottle,

	"ExpiredTokenException": classExpired,
	"ExpiredToken":          classExpired,
	"RequestExpired":        classExpired,

	"ValidationException":      classInvalid,
	"InvalidArgumentException": classInvalid,
	"SerializationException":   classInvalid,

	"ResourceNotFoundException":   classFatal,
	"AccessDeniedException":       classFatal,
	"AccessDenied":                classFatal,
	"KMSAccessDeniedException":    classFatal,
	"KMSDisabledException":        classFatal,
	"KMSNotFoundException":        classFatal,
	"KMSInvalidStateException":    classFatal,
	"KMSOptInRequired":            classFatal,
	"UnrecognizedClientException": classFatal,
	"InvalidSignatureException":   classFatal,
	"InvalidClientTokenId":        classFatal,
	"MissingAuthenticationToken":  classFatal,
	"IncompleteSignature":         classFatal,
	"NotAuthorized":               classFatal,
	"OptInRequired":               classFatal,
	"UnknownOperationException":   classFatal,
}

// classify decides what to do about a failed request. Everything not
// known to be permanent is retried: 5xx, timeouts, resets, truncated
// answers, unknown codes.
func classify(err error) errClass {
	if code := errorCode(err); code != "" {
		if c, ok := codeClass[code]; ok {
			return c
		}
	}
	return classRetry
}

// errorCode returns the AWS error code of err, or a short name of its
// transport failure ("timeout", "connection reset", ...).
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() != "" {
		return ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return fmt.Sprintf("HTTP%d", re.HTTPStatusCode())
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed"
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		return "bad response"
	}
	return ""
}

// resultLabel is the metric label for a failed request.
func resultLabel(c errClass, code string) string {
	switch {
	case c == classThrottle:
		return "throttled"
	case c == classInvalid:
		return "invalid"
	case c == classFatal:
		return "fatal"
	case c == classExpired:
		return "expired_credentials"
	case code == "timeout":
		return "timeout"
	}
	return "error"
}

// codeLabel bounds the code label of failed records: known AWS codes and
// transport failures by name, anything else "other".
func codeLabel(code string) string {
	if _, ok := codeClass[code]; ok {
		return code
	}
	switch code {
	case "InternalFailure", "InternalFailureException", "ServiceUnavailable", "MissingResult",
		"timeout", "connection reset", "connection refused", "connection closed", "bad response":
		return code
	}
	if len(code) == 7 && code[:4] == "HTTP" {
		return code // HTTP5xx
	}
	return "other"
}

// apiCodeError wraps a bare error code for classify.
type apiCodeError string

func (e apiCodeError) Error() string                 { return string(e) }
func (e apiCodeError) ErrorCode() string             { return string(e) }
func (e apiCodeError) ErrorMessage() string          { return string(e) }
func (e apiCodeError) ErrorFault() smithy.ErrorFault { return smithy.FaultServer }
