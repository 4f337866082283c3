package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	streamtypes "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestDynamoDBStreams writes an item twice and reads both changes, with old
// and new images, through the DynamoDB Streams API.
func TestDynamoDBStreams(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := testenv.DynamoDB(t)
	db := d.Client()

	table := testenv.UniqueName("streams")
	created, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
		StreamSpecification: &types.StreamSpecification{
			StreamEnabled:  aws.Bool(true),
			StreamViewType: types.StreamViewTypeNewAndOldImages,
		},
	})
	if err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	streamARN := created.TableDescription.LatestStreamArn
	if streamARN == nil {
		t.Fatal("CreateTable returned no LatestStreamArn")
	}
	for _, status := range []string{"new", "paid"} {
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{
			TableName: aws.String(table),
			Item: map[string]types.AttributeValue{
				"pk":     &types.AttributeValueMemberS{Value: "order-42"},
				"status": &types.AttributeValueMemberS{Value: status},
			},
		}); err != nil {
			t.Fatalf("PutItem: %v", err)
		}
	}

	streams := d.StreamsClient()
	desc, err := streams.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: streamARN})
	if err != nil {
		t.Fatalf("DescribeStream: %v", err)
	}
	if got := desc.StreamDescription.StreamViewType; got != streamtypes.StreamViewTypeNewAndOldImages {
		t.Errorf("StreamViewType = %q, want NEW_AND_OLD_IMAGES", got)
	}
	type change struct{ Event, Old, New string }
	var got []change
	for _, shard := range desc.StreamDescription.Shards {
		it, err := streams.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{
			StreamArn:         streamARN,
			ShardId:           shard.ShardId,
			ShardIteratorType: streamtypes.ShardIteratorTypeTrimHorizon,
		})
		if err != nil {
			t.Fatalf("GetShardIterator: %v", err)
		}
		// An open shard always returns a next iterator; an empty page
		// means we have read what is there.
		for iter := it.ShardIterator; iter != nil; {
			out, err := streams.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				t.Fatalf("GetRecords: %v", err)
			}
			for _, r := range out.Records {
				got = append(got, change{
					Event: string(r.EventName),
					Old:   stringAttr(r.Dynamodb.OldImage, "status"),
					New:   stringAttr(r.Dynamodb.NewImage, "status"),
				})
			}
			if len(out.Records) == 0 {
				break
			}
			iter = out.NextShardIterator
		}
	}
	want := []change{{"INSERT", "", "new"}, {"MODIFY", "new", "paid"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stream records (-want +got):\n%s", diff)
	}
}

func stringAttr(image map[string]streamtypes.AttributeValue, name string) string {
	if s, ok := image[name].(*streamtypes.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}
