package kinesis

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// NewClient returns a Kinesis client for the producer.
//
// Retry layering: the SDK's retryer is replaced by aws.NopRetryer, so each
// SDK call is exactly one HTTP attempt, bounded by cfg.RequestTimeout (the
// producer sets that deadline per call; it includes connecting). The
// producer's own loop is the only retry layer: it retries without limit,
// with exponential backoff and full jitter (cfg.RetryBase to cfg.RetryMax),
// per record for failed entries and per request for failed requests.
// Hence no wait is ever multiplied by hidden SDK attempts, the SDK's
// client-side retry quota can never fail a request on its own, and every
// attempt is visible in the metrics.
//
// Connecting: cfg.ConnectTimeout bounds the TCP dial and the TLS
// handshake together (one deadline for both). Connections are kept alive
// and reused; MaxInFlight idle connections per host are kept.
//
// The endpoint comes from the SDK configuration, so AWS_ENDPOINT_URL and
// AWS_ENDPOINT_URL_KINESIS work as usual. A custom CA bundle loaded by the
// SDK (AWS_CA_BUNDLE) is kept.
//
// optFns apply after the producer's own options, for example to wrap the
// HTTP client it built.
func NewClient(awsCfg aws.Config, cfg Config, optFns ...func(*kinesis.Options)) *kinesis.Client {
	cfg.setDefaults()
	own := func(o *kinesis.Options) {
		o.Retryer = aws.NopRetryer{}
		o.RetryMaxAttempts = 0
		o.HTTPClient = newHTTPClient(awsCfg.HTTPClient, cfg)
	}
	return kinesis.NewFromConfig(awsCfg, append([]func(*kinesis.Options){own}, optFns...)...)
}

func newHTTPClient(base aws.HTTPClient, cfg Config) aws.HTTPClient {
	bc, ok := base.(*awshttp.BuildableClient)
	if !ok || bc == nil {
		bc = awshttp.NewBuildableClient()
	}
	connect := cfg.ConnectTimeout
	return bc.WithTimeout(0).WithDialerOptions(func(d *net.Dialer) {
		d.Timeout = connect
		d.KeepAlive = 30 * time.Second
	}).WithTransportOptions(func(tr *http.Transport) {
		dialer := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
		tr.DialContext = dialer.DialContext
		tr.TLSHandshakeTimeout = connect // proxied connections
		tr.MaxIdleConnsPerHost = max(cfg.MaxInFlight*2, 16)
		tr.MaxConnsPerHost = 0
		tr.IdleConnTimeout = 90 * time.Second
		tr.ForceAttemptHTTP2 = false
		tlsCfg := tr.TLSClientConfig
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, connect)
			defer cancel()
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			var c *tls.Config
			if tlsCfg != nil {
				c = tlsCfg.Clone()
			} else {
				c = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			if c.ServerName == "" {
				host, _, err := net.SplitHostPort(addr)
				if err != nil {
					host = addr
				}
				c.ServerName = host
			}
			c.NextProtos = []string{"http/1.1"}
			conn := tls.Client(raw, c)
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return conn, nil
		}
	})
}

// invalidateCredentials drops cached credentials so the next request
// fetches fresh ones (after an expired-token error).
func invalidateCredentials(c *kinesis.Client) {
	if cc, ok := c.Options().Credentials.(*aws.CredentialsCache); ok {
		cc.Invalidate()
	}
}
