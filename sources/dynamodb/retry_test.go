package dynamodb

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestUnreadableAnswersAreRetried: answers a proxy or a broken connection
// spoils (JSON cut short, an HTML page with status 200 or 502) are
// retried, not taken for a fatal error.
func TestUnreadableAnswersAreRetried(t *testing.T) {
	const html = "<!DOCTYPE html><html><body><h1>Bad Gateway</h1></body></html>"
	for name, h := range map[string]http.HandlerFunc{
		"json cut short": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			io.WriteString(w, `{"Records":[{"eventID":"1","dynamodb":{"Seq`)
		},
		"html with 200": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, html)
		},
		"html with 502": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, html)
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			client := dynamodbstreams.NewFromConfig(testenv.AWSConfig(), func(o *dynamodbstreams.Options) {
				o.BaseEndpoint = aws.String(srv.URL)
			})
			ctx := context.Background()
			_, err := client.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("it")}, noSDKRetries)
			if err == nil {
				t.Fatal("GetRecords succeeded on a spoiled answer")
			}
			if c := classify(ctx, err); c != classRetry {
				t.Errorf("classify(%v) = %v, want classRetry", err, c)
			}
		})
	}
}
