package dynamodb

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// creatingTable is a DynamoDB JSON endpoint whose new table stays CREATING
// for a few DescribeTable calls, as AWS's does for seconds.
type creatingTable struct {
	mu        sync.Mutex
	created   bool
	describes int
	creating  int // DescribeTable answers CREATING this many times after CreateTable
	calls     []string
}

func (f *creatingTable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	io.Copy(io.Discard, r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op)
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	table := map[string]any{
		"TableName": "ckpt",
		"AttributeDefinitions": []any{
			map[string]any{"AttributeName": "scope", "AttributeType": "S"},
			map[string]any{"AttributeName": "key", "AttributeType": "S"},
		},
		"KeySchema": []any{
			map[string]any{"AttributeName": "scope", "KeyType": "HASH"},
			map[string]any{"AttributeName": "key", "KeyType": "RANGE"},
		},
		"TableStatus": "CREATING",
	}
	switch op {
	case "DescribeTable":
		if !f.created {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}`)
			return
		}
		f.describes++
		if f.describes > f.creating {
			table["TableStatus"] = "ACTIVE"
		}
		json.NewEncoder(w).Encode(map[string]any{"Table": table})
	case "CreateTable":
		f.created = true
		json.NewEncoder(w).Encode(map[string]any{"TableDescription": table})
	default:
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"__type":"com.amazonaws.dynamodb.v20120810#UnknownOperationException","message":%q}`, op)
	}
}

// TestOpenWaitsUntilActive: Open creates the missing table and returns only
// once DescribeTable reports it ACTIVE.
func TestOpenWaitsUntilActive(t *testing.T) {
	f := &creatingTable{creating: 2}
	srv := httptest.NewServer(f)
	defer srv.Close()
	client := dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Open(ctx, client, "ckpt"); err != nil {
		t.Fatalf("Open: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.created {
		t.Fatal("table not created")
	}
	if f.describes != 3 {
		t.Errorf("Open returned after %d DescribeTable calls of the new table; want 3 (CREATING, CREATING, ACTIVE); calls %v", f.describes, f.calls)
	}
}
