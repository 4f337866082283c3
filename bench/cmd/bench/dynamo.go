package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"golang.org/x/sync/errgroup"

	"github.com/cdcbridge/cdcbridge/test/scanfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

const ddbTable = "bench"

// item is one DynamoDB item of the benchmark: a composite key and about
// 200 bytes of attributes, the same for DynamoDB Local and the scripted
// stream.
type item struct {
	pk, sk, status, total, note string
	tags                        []string
}

func benchItem(i int) item {
	sum := md5.Sum([]byte(strconv.Itoa(i)))
	h := hex.EncodeToString(sum[:])
	return item{
		pk:     fmt.Sprintf("customer#%05d", i%10_000),
		sk:     strconv.Itoa(i),
		status: "new",
		total:  strconv.FormatFloat(float64(i%100_000)/100, 'f', 2, 64),
		note:   h + h + h + h,
		tags:   []string{"a", "b"},
	}
}

func (it item) size() int {
	return len(it.pk) + len(it.sk) + len(it.status) + len(it.total) + len(it.note) + 2 + 30
}

func (it item) keysJSON() map[string]any {
	return map[string]any{"pk": map[string]any{"S": it.pk}, "sk": map[string]any{"N": it.sk}}
}

func (it item) json() map[string]any {
	return map[string]any{
		"pk":     map[string]any{"S": it.pk},
		"sk":     map[string]any{"N": it.sk},
		"status": map[string]any{"S": it.status},
		"total":  map[string]any{"N": it.total},
		"note":   map[string]any{"S": it.note},
		"tags":   map[string]any{"SS": it.tags},
	}
}

func (it item) attributes() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"pk":     &types.AttributeValueMemberS{Value: it.pk},
		"sk":     &types.AttributeValueMemberN{Value: it.sk},
		"status": &types.AttributeValueMemberS{Value: it.status},
		"total":  &types.AttributeValueMemberN{Value: it.total},
		"note":   &types.AttributeValueMemberS{Value: it.note},
		"tags":   &types.AttributeValueMemberSS{Value: it.tags},
	}
}

// loadDynamoDB creates the table with a NEW_AND_OLD_IMAGES stream, writes
// n items, and returns the stream's shard count.
func loadDynamoDB(ctx context.Context, d *testenv.DynamoDBLocal, n int) (int, time.Duration, error) {
	c := d.Client()
	_, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(ddbTable),
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange},
		},
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: types.ScalarAttributeTypeN},
		},
		BillingMode:         types.BillingModePayPerRequest,
		StreamSpecification: &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	})
	if err != nil {
		return 0, 0, fmt.Errorf("creating table: %w", err)
	}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for lo := 0; lo < n; lo += 25 {
		hi := min(lo+25, n)
		g.Go(func() error {
			reqs := make([]types.WriteRequest, 0, hi-lo)
			for i := lo; i < hi; i++ {
				reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: benchItem(i).attributes()}})
			}
			for len(reqs) > 0 {
				out, err := c.BatchWriteItem(gctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{ddbTable: reqs}})
				if err != nil {
					return err
				}
				reqs = out.UnprocessedItems[ddbTable]
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, fmt.Errorf("writing items: %w", err)
	}
	took := time.Since(start)
	desc, err := c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(ddbTable)})
	if err != nil {
		return 0, 0, err
	}
	sd, err := d.StreamsClient().DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: desc.Table.LatestStreamArn})
	if err != nil {
		return 0, 0, err
	}
	return max(1, len(sd.StreamDescription.Shards)), took, nil
}

// dynamoPhase times DynamoDB Local's stream and then the scripted stream
// of the same items, both into the null endpoint.
func (b *bench) dynamoPhase(ctx context.Context) error {
	d, err := testenv.StartDynamoDB()
	if err != nil {
		return err
	}
	defer d.Stop()
	shards, took, err := loadDynamoDB(ctx, d, b.opts.ddbItems)
	if err != nil {
		return err
	}
	b.logf("DynamoDB Local: %d items written in %.1fs; its stream has %d shard(s)", b.opts.ddbItems, took.Seconds(), shards)
	var local []throughputRun
	for i := range b.opts.reps {
		r, err := b.runThroughput(ctx, runSpec{name: "dynamodb-local", want: int64(b.opts.ddbItems), env: []string{
			"CDCBRIDGE_SOURCE=dynamodb",
			"CDCBRIDGE_DYNAMODB_TABLE=" + ddbTable,
			"AWS_ENDPOINT_URL_DYNAMODB=" + d.Endpoint,
			"AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" + d.Endpoint,
			"CDCBRIDGE_DYNAMODB_SNAPSHOT=never",
		}})
		if err != nil {
			return err
		}
		b.printRun("DynamoDB Local", i, r)
		local = append(local, r)
	}
	// The same items loaded from the table (a parallel Scan) while the
	// stream is read from now on.
	var localLoad []throughputRun
	for i := range b.opts.reps {
		r, err := b.runThroughput(ctx, runSpec{name: "dynamodb-local-load", want: int64(b.opts.ddbItems), env: []string{
			"CDCBRIDGE_SOURCE=dynamodb",
			"CDCBRIDGE_DYNAMODB_TABLE=" + ddbTable,
			"AWS_ENDPOINT_URL_DYNAMODB=" + d.Endpoint,
			"AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" + d.Endpoint,
			"CDCBRIDGE_DYNAMODB_START=latest",
			"CDCBRIDGE_DYNAMODB_SNAPSHOT=initial",
			fmt.Sprintf("CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS=%d", loadSegments),
		}})
		if err != nil {
			return err
		}
		b.printRun("DynamoDB Local load", i, r)
		localLoad = append(localLoad, r)
	}
	_ = d.Stop() // its JVM has no part in what follows

	s, err := newScriptedStreams(ddbTable, shards, b.opts.scriptedItems)
	if err != nil {
		return err
	}
	defer s.Close()
	var scripted []throughputRun
	for i := range b.opts.reps {
		r, err := b.runThroughput(ctx, runSpec{name: "dynamodb-scripted", want: int64(b.opts.scriptedItems), env: []string{
			"CDCBRIDGE_SOURCE=dynamodb",
			"CDCBRIDGE_DYNAMODB_STREAM_ARN=" + s.ARN,
			"AWS_ENDPOINT_URL_DYNAMODB=" + s.URL,
			"AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" + s.URL,
			"CDCBRIDGE_DYNAMODB_SNAPSHOT=never",
		}})
		if err != nil {
			return err
		}
		b.printRun("scripted DynamoDB Streams", i, r)
		scripted = append(scripted, r)
	}
	s.Close()
	scriptedLoad, err := b.scriptedLoad(ctx)
	if err != nil {
		return err
	}
	b.runs["dynamodb_local"], b.runs["dynamodb_scripted"] = local, scripted
	b.runs["dynamodb_local_load"], b.runs["dynamodb_scripted_load"] = localLoad, scriptedLoad
	b.figs["ddb_local_load_items_per_s"] = newFigure("items/s", collect(localLoad, func(r throughputRun) float64 { return r.ChangesPerSecond }))
	b.figs["ddb_scripted_load_items_per_s"] = newFigure("items/s", collect(scriptedLoad, func(r throughputRun) float64 { return r.ChangesPerSecond }))
	b.figs["ddb_scripted_load_cpu_s_per_100k"] = newFigure("CPU seconds per 100,000 items", collect(scriptedLoad, func(r throughputRun) float64 { return r.CPUPer100k }))
	b.figs["ddb_local_changes_per_s"] = newFigure("changes/s", collect(local, func(r throughputRun) float64 { return r.ChangesPerSecond }))
	b.figs["ddb_local_cpu_s_per_100k"] = newFigure("CPU seconds per 100,000 changes", collect(local, func(r throughputRun) float64 { return r.CPUPer100k }))
	b.figs["ddb_scripted_changes_per_s"] = newFigure("changes/s", collect(scripted, func(r throughputRun) float64 { return r.ChangesPerSecond }))
	b.figs["ddb_scripted_cpu_s_per_100k"] = newFigure("CPU seconds per 100,000 changes", collect(scripted, func(r throughputRun) float64 { return r.CPUPer100k }))
	return nil
}

// loadSegments is the segments of the benchmark's loads.
const loadSegments = 4

// scriptedLoad times loads of a table served by a scripted DynamoDB
// endpoint (parallel Scans with their consumed capacity, never throttled)
// beside an idle scripted stream, into the null endpoint: the bridge's own
// cost of a load, without DynamoDB Local's.
func (b *bench) scriptedLoad(ctx context.Context) ([]throughputRun, error) {
	scan := scanfake.New(scanfake.Options{Table: ddbTable, Items: b.opts.scriptedItems, ItemBytes: benchItem(0).size()})
	defer scan.Close()
	idle, err := newScriptedStreams(ddbTable, 1, 0)
	if err != nil {
		return nil, err
	}
	defer idle.Close()
	var runs []throughputRun
	for i := range b.opts.reps {
		r, err := b.runThroughput(ctx, runSpec{name: "dynamodb-scripted-load", want: int64(b.opts.scriptedItems), env: []string{
			"CDCBRIDGE_SOURCE=dynamodb",
			"CDCBRIDGE_DYNAMODB_STREAM_ARN=" + idle.ARN,
			"AWS_ENDPOINT_URL_DYNAMODB=" + scan.URL,
			"AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" + idle.URL,
			"CDCBRIDGE_DYNAMODB_SNAPSHOT=initial",
			fmt.Sprintf("CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS=%d", loadSegments),
		}})
		if err != nil {
			return nil, err
		}
		b.printRun("scripted DynamoDB load", i, r)
		runs = append(runs, r)
	}
	return runs, nil
}
