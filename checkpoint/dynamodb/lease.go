package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// Leases: several instances share the keys of a scope (the shards of a
// DynamoDB stream) through leases kept on the checkpoint items themselves:
//
//	lease_owner       S  the owner's id; absent when the lease is free
//	lease_counter     N  bumped by every take, renewal and release
//	lease_expires_at  S  RFC 3339 time the owner's claim runs out, for people
//	parent_shard_id   S  the shard's parent, so that every instance knows
//	                     the lineage without listing the stream
//	claimed_at        N  (claim items) unix milliseconds of the last claim
//	claimed_by        S  (claim items) who claimed
//
// Every change of a lease is a conditional write on its counter (and
// owner), so of two instances racing for a lease exactly one wins, and an
// owner learns of a take-over at its next renewal. A checkpoint is written
// only by the lease's owner. Deciding when a lease has expired is up to
// the caller: the counter of a live owner changes at least once per lease
// period, so a counter seen unchanged for a whole period (measured by the
// caller's own clock) belongs to an owner that stopped renewing.
const (
	AttrLeaseOwner   = "lease_owner"
	AttrLeaseCounter = "lease_counter"
	AttrLeaseExpires = "lease_expires_at"
	AttrParent       = "parent_shard_id"
	AttrClaimedAt    = "claimed_at"
	AttrClaimedBy    = "claimed_by"
)

// Leases takes, renews and releases leases in a Store's table on behalf of
// one owner. It is safe for concurrent use.
type Leases struct {
	s     *Store
	owner string
	now   func() time.Time
}

// NewLeases returns the leases of owner (an id unique to this process and
// run, such as host, pid and a random suffix) in s's table.
func NewLeases(s *Store, owner string) (*Leases, error) {
	if s == nil {
		return nil, errors.New("checkpoint dynamodb: leases need a store")
	}
	if owner == "" {
		return nil, errors.New("checkpoint dynamodb: empty lease owner")
	}
	return &Leases{s: s, owner: owner, now: time.Now}, nil
}

// Owner returns the owner id the leases are taken for.
func (l *Leases) Owner() string { return l.owner }

// List returns every item of scope (see Scope), in key order, with a
// strongly consistent read.
func (l *Leases) List(ctx context.Context, scope string) ([]checkpoint.Lease, error) {
	var out []checkpoint.Lease
	p := dynamodb.NewQueryPaginator(l.s.client, &dynamodb.QueryInput{
		TableName:                aws.String(l.s.table),
		KeyConditionExpression:   aws.String("#s = :s"),
		ConsistentRead:           aws.Bool(true),
		ExpressionAttributeNames: map[string]string{"#s": AttrScope},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":s": &types.AttributeValueMemberS{Value: scope},
		},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("checkpoint dynamodb: listing leases of %s in %s: %w", scope, l.s.table, err)
		}
		for _, item := range page.Items {
			le, err := decodeLease(item)
			if err != nil {
				return nil, fmt.Errorf("checkpoint dynamodb: listing leases of %s in %s: %w", scope, l.s.table, err)
			}
			out = append(out, le)
		}
	}
	return out, nil
}

func decodeLease(item map[string]types.AttributeValue) (checkpoint.Lease, error) {
	var le checkpoint.Lease
	if k, ok := item[AttrKey].(*types.AttributeValueMemberS); ok {
		le.Key = k.Value
	}
	if o, ok := item[AttrLeaseOwner].(*types.AttributeValueMemberS); ok {
		le.Owner = o.Value
	}
	if c, ok := item[AttrLeaseCounter].(*types.AttributeValueMemberN); ok {
		n, err := strconv.ParseInt(c.Value, 10, 64)
		if err != nil {
			return le, fmt.Errorf("item %s: %s %q: %w", le.Key, AttrLeaseCounter, c.Value, err)
		}
		le.Counter = n
	}
	if p, ok := item[AttrParent].(*types.AttributeValueMemberS); ok {
		le.Parent = p.Value
	}
	if e, ok := item[AttrLeaseExpires].(*types.AttributeValueMemberS); ok {
		le.ExpiresAt, _ = time.Parse(time.RFC3339Nano, e.Value)
	}
	c, ok, err := decodeItem(item)
	if err != nil {
		return le, fmt.Errorf("item %s: %w", le.Key, err)
	}
	le.Checkpoint, le.HasCheckpoint = c, ok
	return le, nil
}

// Register creates key's item when it is missing (a lease-only item
// without checkpoint) and records its parent. It never changes a lease.
func (l *Leases) Register(ctx context.Context, key, parent string) error {
	update := "SET #u = if_not_exists(#u, :u)"
	names := map[string]string{"#u": AttrUpdatedAt}
	values := map[string]types.AttributeValue{":u": l.stamp()}
	if parent != "" {
		update += ", #par = if_not_exists(#par, :par)"
		names["#par"] = AttrParent
		values[":par"] = &types.AttributeValueMemberS{Value: parent}
	}
	_, err := l.s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(l.s.table),
		Key:                       itemKey(key),
		UpdateExpression:          aws.String(update),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	})
	if err != nil {
		return fmt.Errorf("checkpoint dynamodb: registering %s in %s: %w", key, l.s.table, err)
	}
	return nil
}

func (l *Leases) stamp() types.AttributeValue {
	return &types.AttributeValueMemberS{Value: l.now().UTC().Format(time.RFC3339Nano)}
}

func (l *Leases) expiry(d time.Duration) types.AttributeValue {
	return &types.AttributeValueMemberS{Value: l.now().Add(d).UTC().Format(time.RFC3339Nano)}
}

func counterValue(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

// Take makes the caller the owner of the lease seen (as List returned it)
// for d, provided it has not changed since: its counter is still
// seen.Counter (or it was never leased). That covers a free lease, an
// expired one and a steal alike; the caller decides which it may take. It
// returns the lease as it now stands, with its checkpoint, or an error
// wrapping checkpoint.ErrLeaseChanged.
func (l *Leases) Take(ctx context.Context, seen checkpoint.Lease, d time.Duration) (checkpoint.Lease, error) {
	names := map[string]string{"#o": AttrLeaseOwner, "#c": AttrLeaseCounter, "#e": AttrLeaseExpires, "#u": AttrUpdatedAt}
	values := map[string]types.AttributeValue{
		":me":   &types.AttributeValueMemberS{Value: l.owner},
		":next": counterValue(seen.Counter + 1),
		":exp":  l.expiry(d),
		":u":    l.stamp(),
	}
	update := "SET #o = :me, #c = :next, #e = :exp, #u = if_not_exists(#u, :u)"
	if seen.Parent != "" {
		update += ", #par = if_not_exists(#par, :par)"
		names["#par"] = AttrParent
		values[":par"] = &types.AttributeValueMemberS{Value: seen.Parent}
	}
	cond := "attribute_not_exists(#c)"
	if seen.Counter != 0 {
		cond = "#c = :seen"
		values[":seen"] = counterValue(seen.Counter)
	}
	out, err := l.s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(l.s.table),
		Key:                       itemKey(seen.Key),
		UpdateExpression:          aws.String(update),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueAllNew,
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return checkpoint.Lease{}, fmt.Errorf("checkpoint dynamodb: taking the lease of %s at counter %d: %w", seen.Key, seen.Counter, checkpoint.ErrLeaseChanged)
	}
	if err != nil {
		return checkpoint.Lease{}, fmt.Errorf("checkpoint dynamodb: taking the lease of %s: %w", seen.Key, err)
	}
	le, err := decodeLease(out.Attributes)
	if err != nil {
		return checkpoint.Lease{}, fmt.Errorf("checkpoint dynamodb: taking the lease of %s: %w", seen.Key, err)
	}
	return le, nil
}

// Renew extends a lease the caller holds (as Take or the last Renew
// returned it) by d from now and returns it with its new counter, or an
// error wrapping checkpoint.ErrLeaseLost when another instance took it.
func (l *Leases) Renew(ctx context.Context, held checkpoint.Lease, d time.Duration) (checkpoint.Lease, error) {
	_, err := l.s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(l.s.table),
		Key:                                 itemKey(held.Key),
		UpdateExpression:                    aws.String("SET #c = :next, #e = :exp"),
		ConditionExpression:                 aws.String("#o = :me AND #c = :cur"),
		ExpressionAttributeNames:            map[string]string{"#o": AttrLeaseOwner, "#c": AttrLeaseCounter, "#e": AttrLeaseExpires},
		ExpressionAttributeValues:           map[string]types.AttributeValue{":me": &types.AttributeValueMemberS{Value: l.owner}, ":cur": counterValue(held.Counter), ":next": counterValue(held.Counter + 1), ":exp": l.expiry(d)},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err := l.ownerError("renewing", held, err); err != nil {
		return held, err
	}
	held.Counter++
	held.Owner = l.owner
	return held, nil
}

// Release gives a held lease back: the owner is removed, so that another
// instance may take it at once. Call it only once the key's checkpoint
// covers everything this owner sent.
func (l *Leases) Release(ctx context.Context, held checkpoint.Lease) error {
	_, err := l.s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(l.s.table),
		Key:                                 itemKey(held.Key),
		UpdateExpression:                    aws.String("SET #c = :next REMOVE #o, #e"),
		ConditionExpression:                 aws.String("#o = :me AND #c = :cur"),
		ExpressionAttributeNames:            map[string]string{"#o": AttrLeaseOwner, "#c": AttrLeaseCounter, "#e": AttrLeaseExpires},
		ExpressionAttributeValues:           map[string]types.AttributeValue{":me": &types.AttributeValueMemberS{Value: l.owner}, ":cur": counterValue(held.Counter), ":next": counterValue(held.Counter + 1)},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	return l.ownerError("releasing", held, err)
}

// Save writes the checkpoint of a lease the caller owns. Like Store.Save
// it never moves the position backwards (checkpoint.ErrStale); when the
// caller no longer owns the lease it fails with an error matching both
// checkpoint.ErrLeaseLost and checkpoint.ErrStale. The counter is not checked, so
// saves and renewals do not race.
func (l *Leases) Save(ctx context.Context, held checkpoint.Lease, c checkpoint.Checkpoint) error {
	names := map[string]string{"#p": AttrPosition, "#u": AttrUpdatedAt, "#d": AttrData, "#o": AttrLeaseOwner}
	values := map[string]types.AttributeValue{
		":p":  &types.AttributeValueMemberS{Value: c.Position},
		":u":  l.stamp(),
		":me": &types.AttributeValueMemberS{Value: l.owner},
	}
	update := "SET #p = :p, #u = :u REMOVE #d"
	if len(c.Data) > 0 {
		update = "SET #p = :p, #u = :u, #d = :d"
		values[":d"] = &types.AttributeValueMemberB{Value: c.Data}
	}
	_, err := l.s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(l.s.table),
		Key:                                 itemKey(held.Key),
		UpdateExpression:                    aws.String(update),
		ConditionExpression:                 aws.String("#o = :me AND (attribute_not_exists(#p) OR #p <= :p)"),
		ExpressionAttributeNames:            names,
		ExpressionAttributeValues:           values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		old, _ := decodeLease(failed.Item)
		if old.Owner != l.owner {
			return fmt.Errorf("checkpoint dynamodb: saving %s at %q: owner is %q: %w (%w)", held.Key, c.Position, old.Owner, checkpoint.ErrLeaseLost, checkpoint.ErrStale)
		}
		return fmt.Errorf("checkpoint dynamodb: saving %s at %q, stored %q: %w", held.Key, c.Position, old.Checkpoint.Position, checkpoint.ErrStale)
	}
	if err != nil {
		return fmt.Errorf("checkpoint dynamodb: saving %s to %s: %w", held.Key, l.s.table, err)
	}
	return nil
}

// ownerError turns a failed conditional owner check into checkpoint.ErrLeaseLost.
func (l *Leases) ownerError(what string, held checkpoint.Lease, err error) error {
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		old, _ := decodeLease(failed.Item)
		return fmt.Errorf("checkpoint dynamodb: %s the lease of %s at counter %d: now owner %q, counter %d: %w",
			what, held.Key, held.Counter, old.Owner, old.Counter, checkpoint.ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("checkpoint dynamodb: %s the lease of %s: %w", what, held.Key, err)
	}
	return nil
}

// Claim lets one caller among all instances do a periodic task (such as
// listing a stream's shards) at most once per every: it reports true when
// the caller's claim of key succeeded because nobody claimed it within the
// last every (by the table's wall-clock stamps; skewed clocks only shift
// the rate).
func (l *Leases) Claim(ctx context.Context, key string, every time.Duration) (bool, error) {
	now := l.now()
	_, err := l.s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(l.s.table),
		Key:                      itemKey(key),
		UpdateExpression:         aws.String("SET #at = :now, #by = :me"),
		ConditionExpression:      aws.String("attribute_not_exists(#at) OR #at <= :cutoff"),
		ExpressionAttributeNames: map[string]string{"#at": AttrClaimedAt, "#by": AttrClaimedBy},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":now":    counterValue(now.UnixMilli()),
			":cutoff": counterValue(now.Add(-every).UnixMilli()),
			":me":     &types.AttributeValueMemberS{Value: l.owner},
		},
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checkpoint dynamodb: claiming %s in %s: %w", key, l.s.table, err)
	}
	return true, nil
}
