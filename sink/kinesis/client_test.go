package kinesis

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
)

// TestEndpointFromEnvironment: NewClient honours AWS_ENDPOINT_URL_KINESIS
// through the SDK's configuration, for the SDK calls and for PutRecords.
func TestEndpointFromEnvironment(t *testing.T) {
	fake := kinesisfake.New(kinesisfake.Options{Keep: true})
	defer fake.Close()
	t.Setenv("AWS_ENDPOINT_URL_KINESIS", fake.URL)
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1") // the service's own wins
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_SESSION_TOKEN", "token")
	t.Setenv("AWS_REGION", "eu-west-1")
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Stream: "null", DLQDir: t.TempDir(), Linger: time.Millisecond}
	p, err := New(cfg, NewClient(awsCfg, cfg), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	h := &harness{applied: map[string]bool{}, acks: map[string]int{}, order: map[string][]string{}}
	for i := range 10 {
		e := h.event("k", i)
		e.OnAck = nil
		if err := p.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatalf("Flush: %v (status %+v)", err, p.Status())
	}
	if n := len(fake.Records()); n != 10 {
		t.Fatalf("%d records reached the endpoint from the environment", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
