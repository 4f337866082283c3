package fence

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Doer is an HTTP client (the AWS SDK's aws.HTTPClient has this method).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// call is one attempt in flight.
type call struct {
	cancel context.CancelCauseFunc
}

// Client returns base wrapped so that the requests for which fenced
// reports true (nil: every request) are bounded by the gate: refused with
// ErrFenced once the gate's deadline has passed, their context cut to the
// deadline, and cancelled by Revoke. Other requests pass unchanged. The
// response body must be closed, as always; the attempt counts as in flight
// until then.
func (g *Gate) Client(base Doer, fenced func(*http.Request) bool) Doer {
	if g == nil {
		return base
	}
	return &client{g: g, base: base, fenced: fenced}
}

// PutRecords matches the Kinesis requests that carry records (PutRecords
// and PutRecord), by their X-Amz-Target header.
func PutRecords(r *http.Request) bool {
	t := r.Header.Get("X-Amz-Target")
	return strings.HasSuffix(t, ".PutRecords") || strings.HasSuffix(t, ".PutRecord")
}

type client struct {
	g      *Gate
	base   Doer
	fenced func(*http.Request) bool
}

func (c *client) Do(req *http.Request) (*http.Response, error) {
	if c.fenced != nil && !c.fenced(req) {
		return c.base.Do(req)
	}
	g := c.g
	g.mu.Lock()
	deadline, bounded := g.deadlineLocked()
	if bounded && !g.now().Before(deadline) {
		g.mu.Unlock()
		return nil, fmt.Errorf("%w (a lease ran out %v ago)", ErrFenced, g.now().Sub(deadline).Round(time.Millisecond))
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	cl := &call{cancel: cancel}
	g.calls[cl] = struct{}{}
	g.mu.Unlock()

	stopTimer := func() bool { return true }
	if bounded {
		// A timer rather than context.WithDeadline so that the cause
		// names the fence, not a plain deadline.
		t := time.AfterFunc(time.Until(deadline), func() { cancel(ErrFenced) })
		stopTimer = t.Stop
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			stopTimer()
			g.mu.Lock()
			delete(g.calls, cl)
			g.mu.Unlock()
			cancel(nil)
		})
	}
	resp, err := c.base.Do(req.WithContext(ctx))
	if err != nil {
		if cause := context.Cause(ctx); cause == ErrFenced {
			err = fmt.Errorf("%w: %w", ErrFenced, err)
		}
		done()
		return nil, err
	}
	resp.Body = &body{ReadCloser: resp.Body, done: done}
	return resp, nil
}

// body ends the attempt when the response is closed.
type body struct {
	io.ReadCloser
	done func()
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}
