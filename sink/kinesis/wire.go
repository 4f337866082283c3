package kinesis

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// wirePutter sends PutRecords itself, with the client's endpoint
// resolver, credentials, SigV4 signer and HTTP client. The hot path
// avoids the SDK's generic serializer: the JSON body is written once,
// with the exact size, into a pooled buffer straight from the records'
// envelopes, and the answer is scanned without allocating per entry. A
// PutRecords request is then one body buffer, one SHA-256 over it and one
// signature.
type wirePutter struct {
	client    *kinesis.Client
	opts      kinesis.Options
	name, arn *string
	agent     string

	mu  sync.Mutex
	url string // resolved endpoint

	// bodies is a bounded free list of request bodies: with one request
	// per worker, at most MaxInFlight bodies exist, in use or free. (A
	// sync.Pool could keep many multi-megabyte bodies alive between
	// collections.)
	bodies chan *[]byte
	// answers is the same for response bodies: reading each answer into
	// a new, growing buffer was a sixth of the producer's allocations.
	answers chan *[]byte
}

func newWirePutter(c *kinesis.Client, name, arn *string, maxInFlight int) *wirePutter {
	return &wirePutter{client: c, opts: c.Options(), name: name, arn: arn, agent: "cdcbridge-kinesis-producer",
		bodies: make(chan *[]byte, maxInFlight), answers: make(chan *[]byte, maxInFlight)}
}

func (p *wirePutter) endpoint(ctx context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.url != "" {
		return p.url, nil
	}
	o := &p.opts
	if o.EndpointResolverV2 == nil {
		return "", errors.New("kinesis client has no endpoint resolver")
	}
	ep, err := o.EndpointResolverV2.ResolveEndpoint(ctx, kinesis.EndpointParameters{
		Region:        aws.String(o.Region),
		Endpoint:      o.BaseEndpoint,
		UseDualStack:  aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
		UseFIPS:       aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		OperationType: aws.String("data"),
		StreamARN:     p.arn,
	})
	if err != nil {
		return "", fmt.Errorf("resolving the Kinesis endpoint: %w", err)
	}
	p.url = strings.TrimRight(ep.URI.String(), "/") + "/"
	return p.url, nil
}

// appendBody writes the PutRecords request body.
func (p *wirePutter) appendBody(dst []byte, b *batch) []byte {
	dst = append(dst, `{"Records":[`...)
	for i := range b.entries {
		e := &b.entries[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"Data":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.Data)
		dst = append(dst, `","PartitionKey":`...)
		dst = cdc.AppendJSONString(dst, *e.PartitionKey)
		if e.ExplicitHashKey != nil {
			dst = append(dst, `,"ExplicitHashKey":"`...)
			dst = append(dst, *e.ExplicitHashKey...)
			dst = append(dst, '"')
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if p.name != nil {
		dst = append(dst, `,"StreamName":`...)
		dst = cdc.AppendJSONString(dst, *p.name)
	}
	if p.arn != nil {
		dst = append(dst, `,"StreamARN":`...)
		dst = cdc.AppendJSONString(dst, *p.arn)
	}
	return append(dst, '}')
}

func bodySize(b *batch) int {
	n := 64
	for i := range b.entries {
		e := &b.entries[i]
		n += base64.StdEncoding.EncodedLen(len(e.Data)) + 2*len(*e.PartitionKey) + 80
	}
	return n
}

// bodyReader lets the buffer be reused once the transport has closed
// every reader over it.
type bodyReader struct {
	bytes.Reader
	open   *atomic.Int32
	closed atomic.Bool
}

func (r *bodyReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.open.Add(-1)
	}
	return nil
}

func newBodyReader(body []byte, open *atomic.Int32) *bodyReader {
	open.Add(1)
	r := &bodyReader{open: open}
	r.Reset(body)
	return r
}

const maxResponseBytes = 16 << 20

func (p *wirePutter) put(ctx context.Context, b *batch) error {
	url, err := p.endpoint(ctx)
	if err != nil {
		return err
	}
	var bp *[]byte
	select {
	case bp = <-p.bodies:
	default:
		bp = new([]byte)
	}
	if need := bodySize(b); cap(*bp) < need {
		*bp = make([]byte, 0, need)
	}
	body := p.appendBody((*bp)[:0], b)
	*bp = body
	b.dropBlobs() // the body holds them now
	sum := sha256.Sum256(body)

	var open atomic.Int32
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, newBodyReader(body, &open))
	if err != nil {
		return err
	}
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return newBodyReader(body, &open), nil }
	h := req.Header
	h["Content-Type"] = []string{"application/x-amz-json-1.1"}
	h["X-Amz-Target"] = []string{"Kinesis_20131202.PutRecords"}
	h["User-Agent"] = []string{p.agent}
	if c := p.opts.Credentials; c != nil {
		creds, err := c.Retrieve(ctx)
		if err != nil {
			return fmt.Errorf("retrieving credentials: %w", err)
		}
		if err := p.opts.HTTPSignerV4.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "kinesis", p.opts.Region, time.Now()); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
	}
	resp, err := p.opts.HTTPClient.Do(req)
	if open.Load() == 0 {
		select {
		case p.bodies <- bp:
		default:
		}
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	ap, rb, rerr := p.readAnswer(resp)
	defer func() {
		if cap(*ap) > 1<<20 {
			return // an unusual answer; keep the list small
		}
		select {
		case p.answers <- ap:
		default:
		}
	}()
	if resp.StatusCode != http.StatusOK {
		return newAPIError(resp, rb)
	}
	if rerr != nil {
		return fmt.Errorf("reading the PutRecords answer: %w", rerr)
	}
	if err := parsePutRecordsOutput(rb, b); err != nil {
		return &smithy.DeserializationError{Err: err, Snapshot: bytes.Clone(rb[:min(len(rb), 256)])}
	}
	return nil
}

// readAnswer reads a response body into a buffer from the free list,
// sized by Content-Length when the server sent one. The buffer goes back
// to the list once the answer is parsed (nothing parsed aliases it).
func (p *wirePutter) readAnswer(resp *http.Response) (*[]byte, []byte, error) {
	var ap *[]byte
	select {
	case ap = <-p.answers:
	default:
		ap = new([]byte)
	}
	buf := bytes.NewBuffer((*ap)[:0])
	if n := resp.ContentLength; n > 0 && n <= maxResponseBytes {
		buf.Grow(int(n) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, maxResponseBytes))
	*ap = buf.Bytes()
	return ap, *ap, err
}

// apiError is an AWS error answer.
type apiError struct {
	code, msg string
	status    int
}

func (e *apiError) Error() string {
	return fmt.Sprintf("PutRecords: HTTP %d %s: %s", e.status, e.code, e.msg)
}
func (e *apiError) ErrorCode() string    { return e.code }
func (e *apiError) ErrorMessage() string { return e.msg }
func (e *apiError) ErrorFault() smithy.ErrorFault {
	if e.status >= 500 {
		return smithy.FaultServer
	}
	return smithy.FaultClient
}

func newAPIError(resp *http.Response, body []byte) error {
	e := &apiError{status: resp.StatusCode}
	var doc struct {
		Type     string `json:"__type"`
		Code     string `json:"code"`
		Message  string `json:"message"`
		Message2 string `json:"Message"`
	}
	_ = json.Unmarshal(body, &doc)
	code := resp.Header.Get("X-Amzn-Errortype")
	if code == "" {
		code = doc.Type
	}
	if code == "" {
		code = doc.Code
	}
	if i := strings.IndexByte(code, ':'); i >= 0 {
		code = code[:i]
	}
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	if code == "" {
		code = "HTTP" + strconv.Itoa(resp.StatusCode)
	}
	e.code = code
	e.msg = doc.Message
	if e.msg == "" {
		e.msg = doc.Message2
	}
	return e
}
