package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestCheckDynamoDB runs `cdcbridge check` for the DynamoDB source: a table
// with a stream passes, one without a stream fails with the fix.
func TestCheckDynamoDB(t *testing.T) {
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := testenv.UniqueName("checkddb")
	if err := kin.CreateStream(ctx, stream, 1); err != nil {
		t.Fatal(err)
	}
	withStream, without := testenv.UniqueName("withstream"), testenv.UniqueName("nostream")
	for _, name := range []string{withStream, without} {
		in := &dynamodb.CreateTableInput{
			TableName:            aws.String(name),
			AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
			KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
			BillingMode:          types.BillingModePayPerRequest,
		}
		if name == withStream {
			in.StreamSpecification = &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeKeysOnly}
		}
		if _, err := ddb.Client().CreateTable(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	run := func(table string) (int, string) {
		cmd := exec.Command(buildBinary(t), "check")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
			"AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL_KINESIS=" + kin.Endpoint, "AWS_ENDPOINT_URL_DYNAMODB=" + ddb.Endpoint,
			"AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" + ddb.Endpoint, "CDCBRIDGE_SOURCE=dynamodb", "CDCBRIDGE_DYNAMODB_TABLE=" + table,
			"CDCBRIDGE_KINESIS_STREAM=" + stream, "CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(t.TempDir(), "cp.json")}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	code, out := run(withStream)
	if code != 0 || !strings.Contains(out, "ok    dynamodb stream") || !strings.Contains(out, "warn  dynamodb view type") {
		t.Fatalf("check with a KEYS_ONLY stream: exit %d\n%s", code, out)
	}
	code, out = run(without)
	if code != 1 || !strings.Contains(out, "fail  dynamodb stream") || !strings.Contains(out, "StreamEnabled=true") {
		t.Fatalf("check on a table without a stream: exit %d\n%s", code, out)
	}
}
