package testenv_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestKinesaliteSurvivesCutRequests: a client that dies in the middle of a
// request body (a killed bridge) must not take kinesalite down with it.
func TestKinesaliteSurvivesCutRequests(t *testing.T) {
	k := testenv.Kinesalite(t)
	for range 3 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(k.Endpoint, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 100000\r\n\r\n{\"Records\":[")
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	}
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.Client().ListStreams(ctx, &kinesis.ListStreamsInput{}); err != nil {
		t.Fatalf("kinesalite stopped answering after cut requests: %v\n%s", err, k.Log())
	}
}
