// Package dynamodb keeps checkpoints in a DynamoDB table
// (CDCBRIDGE_CHECKPOINT_STORE dynamodb://TABLE), so that several instances,
// or an instance that moved to another host, share them.
//
// Guarantees:
//   - Save returns once DynamoDB acknowledged the write, which is durable.
//   - A position never moves backwards: Save is a conditional write that
//     succeeds only while the stored position sorts at or before the new
//     one, so a stale writer (an instance that lost its shard, a delayed
//     retry) gets checkpoint.ErrStale instead of overwriting newer progress.
//   - Open creates the table when it is missing (on-demand billing) and
//     returns only once it is ACTIVE; a table with another key schema is an
//     error, never written to.
//
// The table has one item per checkpoint key. Keys are grouped by scope, the
// part before their last '/' (for a DynamoDB shard key
// "dynamodb/<streamARN>/<shardID>" the scope is the stream), so one Query
// lists a stream's shards:
//
//	scope       S  partition key: key up to its last '/' (the whole key if it has none)
//	key         S  sort key: the full checkpoint key
//	position    S  Checkpoint.Position, compared as a string
//	data        B  Checkpoint.Data (absent when empty)
//	updated_at  S  RFC 3339 time of the last Save, for people
//
// Saves update only these attributes (UpdateItem, never PutItem), so shard
// leases (lease_owner, lease_counter, lease_expires_at, parent_shard_id)
// can live on the same items without a save erasing them.
package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// Attribute names of the table's items.
const (
	AttrScope     = "scope"
	AttrKey       = "key"
	AttrPosition  = "position"
	AttrData      = "data"
	AttrUpdatedAt = "updated_at"
)

// Store is a checkpoint.Store in a DynamoDB table. It is safe for
// concurrent use.
type Store struct {
	client *dynamodb.Client
	table  string
}

var _ checkpoint.Store = (*Store)(nil)

// tableWait bounds how long Open waits for a table to become ACTIVE.
const tableWait = 5 * time.Minute

// Open returns a store on table, creating the table when it is missing and
// waiting until it is ACTIVE.
func Open(ctx context.Context, client *dynamodb.Client, table string) (*Store, error) {
	if client == nil {
		return nil, errors.New("checkpoint dynamodb: nil client")
	}
	if table == "" {
		return nil, errors.New("checkpoint dynamodb: empty table name")
	}
	s := &Store{client: client, table: table}
	if err := s.ensureTable(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Table returns the table's name.
func (s *Store) Table() string { return s.table }

func (s *Store) ensureTable(ctx context.Context) error {
	out, err := s.client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)})
	var notFound *types.ResourceNotFoundException
	switch {
	case errors.As(err, &notFound):
		if err := s.createTable(ctx); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("checkpoint dynamodb: describing table %s: %w", s.table, err)
	default:
		if err := checkSchema(s.table, out.Table); err != nil {
			return err
		}
		if out.Table.TableStatus == types.TableStatusActive || out.Table.TableStatus == types.TableStatusUpdating {
			return nil
		}
	}
	w := dynamodb.NewTableExistsWaiter(s.client, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 500 * time.Millisecond
		o.MaxDelay = 5 * time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)}, tableWait); err != nil {
		return fmt.Errorf("checkpoint dynamodb: waiting for table %s to become active: %w", s.table, err)
	}
	return nil
}

func (s *Store) createTable(ctx context.Context) error {
	_, err := s.client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   aws.String(s.table),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(AttrScope), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(AttrKey), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(AttrScope), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(AttrKey), KeyType: types.KeyTypeRange},
		},
	})
	var inUse *types.ResourceInUseException
	if errors.As(err, &inUse) {
		// Another instance created it at the same moment; check that it
		// made the same table.
		out, err := s.client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)})
		if err != nil {
			return fmt.Errorf("checkpoint dynamodb: describing table %s: %w", s.table, err)
		}
		return checkSchema(s.table, out.Table)
	}
	if err != nil {
		return fmt.Errorf("checkpoint dynamodb: creating table %s: %w", s.table, err)
	}
	return nil
}

func checkSchema(table string, d *types.TableDescription) error {
	want := fmt.Sprintf("partition key %q (S) and sort key %q (S)", AttrScope, AttrKey)
	if d == nil {
		return fmt.Errorf("checkpoint dynamodb: table %s: no description", table)
	}
	attrTypes := map[string]types.ScalarAttributeType{}
	for _, a := range d.AttributeDefinitions {
		attrTypes[aws.ToString(a.AttributeName)] = a.AttributeType
	}
	var hash, rng string
	for _, k := range d.KeySchema {
		switch k.KeyType {
		case types.KeyTypeHash:
			hash = aws.ToString(k.AttributeName)
		case types.KeyTypeRange:
			rng = aws.ToString(k.AttributeName)
		}
	}
	if hash != AttrScope || rng != AttrKey || attrTypes[AttrScope] != types.ScalarAttributeTypeS || attrTypes[AttrKey] != types.ScalarAttributeTypeS {
		return fmt.Errorf("checkpoint dynamodb: table %s has key schema (hash %q, range %q), want %s; "+
			"name a new table and cdcbridge creates it", table, hash, rng, want)
	}
	return nil
}

// Scope returns the scope of a key: the part before its last '/', or the
// whole key when it has none.
func Scope(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return key
}

func itemKey(key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrScope: &types.AttributeValueMemberS{Value: Scope(key)},
		AttrKey:   &types.AttributeValueMemberS{Value: key},
	}
}

// Load returns the checkpoint of key (a strongly consistent read), or
// checkpoint.ErrNotFound.
func (s *Store) Load(ctx context.Context, key string) (checkpoint.Checkpoint, error) {
	if key == "" {
		return checkpoint.Checkpoint{}, errors.New("checkpoint dynamodb: empty key")
	}
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:            aws.String(s.table),
		Key:                  itemKey(key),
		ConsistentRead:       aws.Bool(true),
		ProjectionExpression: aws.String("#p, #d"),
		ExpressionAttributeNames: map[string]string{
			"#p": AttrPosition, "#d": AttrData,
		},
	})
	if err != nil {
		return checkpoint.Checkpoint{}, fmt.Errorf("checkpoint dynamodb: loading %s from %s: %w", key, s.table, err)
	}
	c, ok, err := decodeItem(out.Item)
	if err != nil {
		return checkpoint.Checkpoint{}, fmt.Errorf("checkpoint dynamodb: loading %s from %s: %w", key, s.table, err)
	}
	if !ok {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	return c, nil
}

// decodeItem reads position and data; ok is false when the item has no
// position (missing, or an item that holds only a lease).
func decodeItem(item map[string]types.AttributeValue) (c checkpoint.Checkpoint, ok bool, err error) {
	pv, found := item[AttrPosition]
	if !found {
		return c, false, nil
	}
	p, isS := pv.(*types.AttributeValueMemberS)
	if !isS {
		return c, false, fmt.Errorf("attribute %s is %T, want a string", AttrPosition, pv)
	}
	c.Position = p.Value
	if dv, found := item[AttrData]; found {
		d, isB := dv.(*types.AttributeValueMemberB)
		if !isB {
			return c, false, fmt.Errorf("attribute %s is %T, want binary", AttrData, dv)
		}
		c.Data = d.Value
	}
	return c, true, nil
}

// Save stores c under key when the stored position is absent or sorts at
// or before c.Position, else returns an error wrapping checkpoint.ErrStale.
func (s *Store) Save(ctx context.Context, key string, c checkpoint.Checkpoint) error {
	if key == "" {
		return errors.New("checkpoint dynamodb: empty key")
	}
	names := map[string]string{"#p": AttrPosition, "#u": AttrUpdatedAt, "#d": AttrData}
	values := map[string]types.AttributeValue{
		":p": &types.AttributeValueMemberS{Value: c.Position},
		":u": &types.AttributeValueMemberS{Value: time.Now().UTC().Format(time.RFC3339Nano)},
	}
	update := "SET #p = :p, #u = :u REMOVE #d"
	if len(c.Data) > 0 {
		update = "SET #p = :p, #u = :u, #d = :d"
		values[":d"] = &types.AttributeValueMemberB{Value: c.Data}
	}
	_, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(s.table),
		Key:                                 itemKey(key),
		UpdateExpression:                    aws.String(update),
		ConditionExpression:                 aws.String("attribute_not_exists(#p) OR #p <= :p"),
		ExpressionAttributeNames:            names,
		ExpressionAttributeValues:           values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		stored := "(unknown)"
		if old, ok, _ := decodeItem(failed.Item); ok {
			stored = fmt.Sprintf("%q", old.Position)
		}
		return fmt.Errorf("checkpoint dynamodb: saving %s at %q, stored %s: %w", key, c.Position, stored, checkpoint.ErrStale)
	}
	if err != nil {
		return fmt.Errorf("checkpoint dynamodb: saving %s to %s: %w", key, s.table, err)
	}
	return nil
}

// Delete removes key's item (a no-op when it is absent).
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table),
		Key:       itemKey(key),
	})
	if err != nil {
		return fmt.Errorf("checkpoint dynamodb: deleting %s from %s: %w", key, s.table, err)
	}
	return nil
}

// Keys returns the keys of scope (see Scope) that hold a checkpoint, in
// sort order.
func (s *Store) Keys(ctx context.Context, scope string) ([]string, error) {
	var keys []string
	p := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
		TableName:                aws.String(s.table),
		KeyConditionExpression:   aws.String("#s = :s"),
		FilterExpression:         aws.String("attribute_exists(#p)"),
		ProjectionExpression:     aws.String("#k"),
		ConsistentRead:           aws.Bool(true),
		ExpressionAttributeNames: map[string]string{"#s": AttrScope, "#p": AttrPosition, "#k": AttrKey},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":s": &types.AttributeValueMemberS{Value: scope},
		},
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("checkpoint dynamodb: listing scope %s of %s: %w", scope, s.table, err)
		}
		for _, item := range out.Items {
			if k, ok := item[AttrKey].(*types.AttributeValueMemberS); ok && k.Value != scope {
				keys = append(keys, k.Value)
			}
		}
	}
	return keys, nil
}

// Close releases nothing: the client belongs to the caller.
func (s *Store) Close() error { return nil }
