package dynamodb

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	shared "github.com/cdcbridge/cdcbridge/internal/backoff"
)

// Errors of the DynamoDB Streams API are classified once, here, into what
// the source does about them.
type errClass int

const (
	classFatal     errClass = iota // stop with the error
	classRetry                     // throttling, 5xx, timeouts, network: back off and retry
	classExpired                   // ExpiredIteratorException: get a new iterator
	classTrimmed                   // TrimmedDataAccessException: records expired unread
	classNotFound                  // ResourceNotFoundException: shard or stream gone
	classCancelled                 // our own context ended
)

var (
	retryables = retry.IsErrorRetryables(retry.DefaultRetryables)
	throttles  = retry.IsErrorThrottles(retry.DefaultThrottles)
)

func classify(ctx context.Context, err error) errClass {
	var (
		expired  *types.ExpiredIteratorException
		trimmed  *types.TrimmedDataAccessException
		notFound *types.ResourceNotFoundException
		limit    *types.LimitExceededException
		internal *types.InternalServerError
	)
	switch {
	case ctx.Err() != nil:
		return classCancelled
	case errors.As(err, &expired):
		return classExpired
	case errors.As(err, &trimmed):
		return classTrimmed
	case errors.As(err, &notFound):
		return classNotFound
	case errors.As(err, &limit), errors.As(err, &internal):
		return classRetry
	case errors.Is(err, context.DeadlineExceeded):
		// Our per-call timeout (the caller's context is still alive).
		return classRetry
	case throttles.IsErrorThrottle(err) == aws.TrueTernary, retryables.IsErrorRetryable(err) == aws.TrueTernary:
		return classRetry
	case isUnreadable(err):
		// An answer that cannot be read (cut short, an HTML page from a
		// proxy) says nothing about the request; every call the source
		// makes is safe to repeat.
		return classRetry
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return classRetry
	}
	return classFatal
}

func isUnreadable(err error) bool {
	var de *smithy.DeserializationError
	return errors.As(err, &de)
}

// errorCode is a low-cardinality label for a failed call.
func errorCode(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	if isUnreadable(err) {
		return "unreadable_answer"
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() != "" {
		return apiErr.ErrorCode()
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) && respErr.HTTPStatusCode() != 0 {
		return "http_" + strconv.Itoa(respErr.HTTPStatusCode())
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		if netErr.Timeout() {
			return "timeout"
		}
		return "network"
	}
	return "other"
}

// noSDKRetries makes a call fail on its first error: the source retries
// itself, with its own backoff, counting every failure by code, and without
// the SDK's retry quota that would turn sustained throttling into errors.
func noSDKRetries(o *dynamodbstreams.Options) { o.Retryer = aws.NopRetryer{} }

// backoff is the source's delay between failed calls (internal/backoff,
// equal jitter): attempt n waits a random time between half and all of
// min(max, base·2^(n-1)), so instances throttled together do not retry
// together.
type backoff struct{ b shared.Backoff }

func newBackoff(base, max time.Duration) *backoff {
	return &backoff{shared.Backoff{Base: base, Max: max, Jitter: shared.Equal}}
}

// wait sleeps for the next delay or until ctx ends.
func (b *backoff) wait(ctx context.Context) error { return b.b.Wait(ctx) }

func (b *backoff) reset() { b.b.Reset() }

// jitter returns d ± 20%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d*4/5 + rand.N(d*2/5+1)
}
