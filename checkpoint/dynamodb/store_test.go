package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func openT(t *testing.T) (*Store, *dynamodb.Client) {
	t.Helper()
	client := testenv.DynamoDB(t).Client()
	table := testenv.UniqueName("ckpt")
	s, err := Open(context.Background(), client, table)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, client
}

func TestOpenCreatesTable(t *testing.T) {
	ctx := context.Background()
	s, client := openT(t)
	out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.Table())})
	if err != nil {
		t.Fatal(err)
	}
	if out.Table.TableStatus != types.TableStatusActive {
		t.Errorf("table status %s, want ACTIVE", out.Table.TableStatus)
	}
	if bm := out.Table.BillingModeSummary; bm == nil || bm.BillingMode != types.BillingModePayPerRequest {
		t.Errorf("billing mode %+v, want PAY_PER_REQUEST", bm)
	}
	// Opening an existing table (another instance, a restart) works.
	if _, err := Open(ctx, client, s.Table()); err != nil {
		t.Fatalf("Open of the existing table: %v", err)
	}
}

func TestOpenRefusesOtherSchema(t *testing.T) {
	ctx := context.Background()
	client := testenv.DynamoDB(t).Client()
	other := testenv.UniqueName("other_schema")
	_, err := client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(other),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, client, other)
	if err == nil || !strings.Contains(err.Error(), "key schema") {
		t.Fatalf("Open of a table with another schema: %v, want a key schema error", err)
	}
}

func TestSaveLoad(t *testing.T) {
	ctx := context.Background()
	s, _ := openT(t)
	if _, err := s.Load(ctx, "dynamodb/arn/shard-1"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load of a new key: %v, want ErrNotFound", err)
	}
	cases := map[string]checkpoint.Checkpoint{
		"dynamodb/arn:aws:dynamodb:us-east-1:1:table/t/stream/2026/shardId-1": {Position: "0000000000000000000000000000000000000100"},
		"dynamodb/arn:aws:dynamodb:us-east-1:1:table/t/stream/2026/shardId-2": {Position: "SHARD_END", Data: []byte(`{"finished":true}`)},
		"postgres/123/db/slot": {Position: "00000000016B3780", Data: []byte{0, 0xff}},
		"noslash":              {Position: "1"},
	}
	for k, c := range cases {
		if err := s.Save(ctx, k, c); err != nil {
			t.Fatalf("Save(%s): %v", k, err)
		}
	}
	for k, c := range cases {
		got, err := s.Load(ctx, k)
		if err != nil {
			t.Fatalf("Load(%s): %v", k, err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("Load(%s) (-want +got):\n%s", k, diff)
		}
	}
	// Data can be dropped again.
	k := "postgres/123/db/slot"
	if err := s.Save(ctx, k, checkpoint.Checkpoint{Position: "00000000016B3781"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(ctx, k); got.Data != nil {
		t.Errorf("data %q still there after a Save without data", got.Data)
	}
}

func TestStaleWriterCannotMoveBackwards(t *testing.T) {
	ctx := context.Background()
	a, _ := openT(t)
	// A second instance with its own client on the same table.
	b, err := Open(ctx, testenv.DynamoDB(t).Client(), a.Table())
	if err != nil {
		t.Fatal(err)
	}
	const key = "dynamodb/arn/shardId-9"
	if err := a.Save(ctx, key, checkpoint.Checkpoint{Position: "0000000200"}); err != nil {
		t.Fatal(err)
	}
	err = b.Save(ctx, key, checkpoint.Checkpoint{Position: "0000000150"})
	if !errors.Is(err, checkpoint.ErrStale) {
		t.Fatalf("stale Save: %v, want ErrStale", err)
	}
	if !strings.Contains(err.Error(), `"0000000200"`) {
		t.Errorf("stale error %q does not name the stored position", err)
	}
	if err := b.Save(ctx, key, checkpoint.Checkpoint{Position: "0000000200", Data: []byte("x")}); err != nil {
		t.Fatalf("Save of an equal position: %v", err)
	}
	got, err := a.Load(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(checkpoint.Checkpoint{Position: "0000000200", Data: []byte("x")}, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestConcurrentWritersKeepTheHighest(t *testing.T) {
	ctx := context.Background()
	s, _ := openT(t)
	const key = "dynamodb/arn/shardId-race"
	var wg sync.WaitGroup
	var mu sync.Mutex
	stale := 0
	for w := range 4 {
		wg.Go(func() {
			for i := range 20 {
				pos := fmt.Sprintf("%06d", i*4+w)
				err := s.Save(ctx, key, checkpoint.Checkpoint{Position: pos})
				switch {
				case errors.Is(err, checkpoint.ErrStale):
					mu.Lock()
					stale++
					mu.Unlock()
				case err != nil:
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got, err := s.Load(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Position != "000079" {
		t.Fatalf("position %q after racing writers, want the highest, 000079", got.Position)
	}
	t.Logf("%d saves refused as stale", stale)
}

func TestSavePreservesOtherAttributes(t *testing.T) {
	ctx := context.Background()
	s, client := openT(t)
	const key = "dynamodb/arn/shardId-lease"
	// A lease written by someone else on the same item.
	_, err := client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.Table()),
		Item: map[string]types.AttributeValue{
			AttrScope:       &types.AttributeValueMemberS{Value: Scope(key)},
			AttrKey:         &types.AttributeValueMemberS{Value: key},
			"lease_owner":   &types.AttributeValueMemberS{Value: "instance-a"},
			"lease_counter": &types.AttributeValueMemberN{Value: "7"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// An item with a lease but no position has no checkpoint yet.
	if _, err := s.Load(ctx, key); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load of a lease-only item: %v, want ErrNotFound", err)
	}
	if err := s.Save(ctx, key, checkpoint.Checkpoint{Position: "5"}); err != nil {
		t.Fatal(err)
	}
	out, err := client.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.Table()), Key: itemKey(key), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := out.Item["lease_owner"].(*types.AttributeValueMemberS); !ok || o.Value != "instance-a" {
		t.Fatalf("lease_owner lost by Save: item %v", out.Item)
	}
	if _, ok := out.Item[AttrUpdatedAt]; !ok {
		t.Errorf("no %s attribute", AttrUpdatedAt)
	}
}

func TestKeysAndDelete(t *testing.T) {
	ctx := context.Background()
	s, _ := openT(t)
	scope := "dynamodb/arn:aws:dynamodb:us-east-1:1:table/t/stream/2026-01-01T00:00:00.000"
	for _, k := range []string{scope + "/shardId-1", scope + "/shardId-2", scope + "x/shardId-3", "other/k"} {
		if err := s.Save(ctx, k, checkpoint.Checkpoint{Position: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, scope+"/shardId-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, scope+"/missing"); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Keys(ctx, scope)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{scope + "/shardId-2"}, keys); diff != "" {
		t.Fatalf("Keys (-want +got):\n%s", diff)
	}
}
