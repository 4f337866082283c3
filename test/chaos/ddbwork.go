package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cdcbridge/cdcbridge/test/verify"
)

// DDBWorkload is PGWorkload's counterpart for a DynamoDB table with a
// stream (NEW_AND_OLD_IMAGES): puts of new items, updates of hot and cold
// items, deletes and re-puts, large items, and transactions
// (TransactWriteItems) of many items. Items carry ver and pad attributes.
// A request whose outcome is unknown is resolved by reading the item back.
type DDBWorkload struct {
	Client      *dynamodb.Client
	Table       string
	Workers     int // default 2
	Changes     int
	TxPerSecond float64 // per worker; 0: unpaced
	HotItems    int     // default 10
	LargeProb   float64
	LargeSize   [2]int // default 50-150 KiB (an item holds at most 400 KB)
	BigTxProb   float64
	BigTxSize   int // items per TransactWriteItems (default 25)
	Rand        *rand.Rand
	Log         *verify.Log
	// ExistingShare is the share of single changes that update or delete
	// the items Populate wrote.
	ExistingShare float64

	existing  []string
	budget    atomic.Int64
	committed atomic.Int64
	mu        sync.Mutex
	touched   map[string]struct{}
}

func (w *DDBWorkload) defaults() {
	if w.touched != nil {
		return
	}
	if w.Workers == 0 {
		w.Workers = 2
	}
	if w.HotItems == 0 {
		w.HotItems = 10
	}
	if w.LargeSize == [2]int{} {
		w.LargeSize = [2]int{50 << 10, 150 << 10}
	}
	if w.BigTxSize == 0 {
		w.BigTxSize = 25
	}
	w.touched = map[string]struct{}{}
}

// CreateDDBTable creates a table keyed by pk (string) with a
// NEW_AND_OLD_IMAGES stream.
func CreateDDBTable(ctx context.Context, c *dynamodb.Client, table string) error {
	_, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
		StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	})
	return err
}

// Seed writes one item (key "seed") and logs it.
func (w *DDBWorkload) Seed(ctx context.Context) error {
	o := ddbOp{op: "insert", key: "seed", ver: 1, pad: "seed"}
	if _, err := w.Client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(w.Table), Item: w.item(o)}); err != nil {
		return err
	}
	w.Log.Add(verify.Change{Table: w.Table, Key: ddbKey(o.key), Op: "insert", Ver: 1, Digest: verify.PayloadDigest(o.pad), At: time.Now()})
	w.Log.SetFinal(w.Table, ddbKey(o.key), 1, true)
	return nil
}

// existingItemPad is the pad of an item Populate wrote.
func existingItemPad(k string) string { return "pre-" + k }

// Populate writes n items (keys e-1..e-n, version 0) before the bridge
// starts, and logs them as inserts (the stream holds them) and as
// existing items (a read event may carry them).
func (w *DDBWorkload) Populate(ctx context.Context, n int) error {
	w.defaults()
	for i := 1; i <= n; i += 25 {
		var reqs []types.WriteRequest
		for j := i; j < min(i+25, n+1); j++ {
			k := "e-" + strconv.Itoa(j)
			w.existing = append(w.existing, k)
			reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: w.item(ddbOp{key: k, ver: 0, pad: existingItemPad(k)})}})
			c := verify.Change{Table: w.Table, Key: ddbKey(k), Op: "insert", Ver: 0, Digest: verify.PayloadDigest(existingItemPad(k)), At: time.Now()}
			w.Log.Add(c)
			w.Log.AddExisting(c)
		}
		for len(reqs) > 0 {
			out, err := w.Client.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{w.Table: reqs}})
			if err != nil {
				return fmt.Errorf("populating: %w", err)
			}
			reqs = out.UnprocessedItems[w.Table]
		}
	}
	return nil
}

// Committed returns the number of changes made so far.
func (w *DDBWorkload) Committed() int64 { return w.committed.Load() }

// Run writes until the budget is used up or ctx ends.
func (w *DDBWorkload) Run(ctx context.Context) error {
	w.defaults()
	w.budget.Store(int64(w.Changes))
	return runWorkers(ctx, w.Workers, w.Rand, w.worker)
}

type ddbOp struct {
	op  string
	key string
	ver int64
	pad string
}

func (w *DDBWorkload) worker(ctx context.Context, me int, rng *rand.Rand) error {
	rows := map[string]*pgRow{}
	var cold []string
	next := 0
	newCold := func() string {
		k := fmt.Sprintf("c-%d-%d", me, next)
		next++
		return k
	}
	var hot []string
	for i := range w.HotItems {
		if i%w.Workers == me {
			hot = append(hot, fmt.Sprintf("h-%d", i))
		}
	}
	var existing []string
	for i, k := range w.existing {
		if i%w.Workers == me {
			existing = append(existing, k)
			rows[k] = &pgRow{ver: 0, exists: true}
		}
	}
	var pace *time.Ticker
	if w.TxPerSecond > 0 {
		pace = time.NewTicker(time.Duration(float64(time.Second) / w.TxPerSecond))
		defer pace.Stop()
	}
	for w.budget.Load() > 0 {
		if pace != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-pace.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		var ops []ddbOp
		state := func(k string) pgRow {
			if r, ok := rows[k]; ok {
				return *r
			}
			return pgRow{}
		}
		if rng.Float64() < w.BigTxProb {
			// A transaction touches each item once.
			seen := map[string]bool{}
			for len(ops) < w.BigTxSize {
				k := newCold()
				if len(cold) > 0 && rng.IntN(2) == 0 {
					k = cold[rng.IntN(len(cold))]
				}
				if seen[k] {
					continue
				}
				seen[k] = true
				r := state(k)
				o := ddbOp{op: "update", key: k, ver: r.ver + 1, pad: randText(rng, 16+rng.IntN(100))}
				if !r.exists {
					o.op = "insert"
				}
				ops = append(ops, o)
			}
		} else {
			var k string
			switch x := rng.Float64(); {
			case len(existing) > 0 && rng.Float64() < w.ExistingShare:
				k = existing[rng.IntN(len(existing))]
			case x < 0.4:
				k = hot[rng.IntN(len(hot))]
			case x < 0.7 || len(cold) == 0:
				k = newCold()
			default:
				k = cold[rng.IntN(len(cold))]
			}
			r := state(k)
			o := ddbOp{key: k, ver: r.ver + 1}
			switch {
			case !r.exists:
				o.op = "insert"
			case (k[0] == 'c' || k[0] == 'e') && rng.Float64() < 0.2:
				o.op, o.ver = "delete", r.ver
			default:
				o.op = "update"
			}
			if o.op != "delete" {
				size := 16 + rng.IntN(200)
				if rng.Float64() < w.LargeProb {
					size = w.LargeSize[0] + rng.IntN(w.LargeSize[1]-w.LargeSize[0]+1)
				}
				o.pad = randText(rng, size)
			}
			ops = append(ops, o)
		}
		w.budget.Add(-int64(len(ops)))
		if err := w.apply(ctx, ops); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("worker %d: %w", me, err)
		}
		var log []verify.Change
		for _, o := range ops {
			c := verify.Change{Table: w.Table, Key: ddbKey(o.key), Op: o.op, Ver: o.ver}
			if o.op != "delete" {
				c.Digest = verify.PayloadDigest(o.pad)
			}
			log = append(log, c)
			if _, ok := rows[o.key]; !ok && o.key[0] == 'c' {
				cold = append(cold, o.key)
			}
			rows[o.key] = &pgRow{ver: o.ver, exists: o.op != "delete"}
			w.mu.Lock()
			w.touched[o.key] = struct{}{}
			w.mu.Unlock()
		}
		now := time.Now()
		for i := range log {
			log[i].At = now
		}
		w.Log.Add(log...)
		w.committed.Add(int64(len(log)))
	}
	return nil
}

func ddbKey(k string) string { return verify.CanonicalKey(map[string]any{"pk": k}) }

func (w *DDBWorkload) item(o ddbOp) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"pk":  &types.AttributeValueMemberS{Value: o.key},
		"ver": &types.AttributeValueMemberN{Value: strconv.FormatInt(o.ver, 10)},
		"pad": &types.AttributeValueMemberS{Value: o.pad},
	}
}

// apply makes the changes, retrying a failed request after checking
// whether it took effect.
func (w *DDBWorkload) apply(ctx context.Context, ops []ddbOp) error {
	for attempt := 0; ; attempt++ {
		var err error
		if len(ops) > 1 {
			items := make([]types.TransactWriteItem, len(ops))
			for i, o := range ops {
				if o.op == "delete" {
					items[i] = types.TransactWriteItem{Delete: &types.Delete{TableName: aws.String(w.Table),
						Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: o.key}}}}
				} else {
					items[i] = types.TransactWriteItem{Put: &types.Put{TableName: aws.String(w.Table), Item: w.item(o)}}
				}
			}
			_, err = w.Client.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		} else {
			o := ops[0]
			switch o.op {
			case "delete":
				_, err = w.Client.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(w.Table),
					Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: o.key}}})
			case "insert":
				_, err = w.Client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(w.Table), Item: w.item(o)})
			default:
				_, err = w.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(w.Table),
					Key:                      map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: o.key}},
					UpdateExpression:         aws.String("SET #v = :v, #p = :p"),
					ExpressionAttributeNames: map[string]string{"#v": "ver", "#p": "pad"},
					ExpressionAttributeValues: map[string]types.AttributeValue{
						":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(o.ver, 10)},
						":p": &types.AttributeValueMemberS{Value: o.pad}}})
			}
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || attempt >= 20 {
			return err
		}
		// Did it take effect? The first item tells (a transaction is all or nothing).
		done, cerr := w.applied(ctx, ops[0])
		if cerr == nil && done {
			return nil
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func (w *DDBWorkload) applied(ctx context.Context, o ddbOp) (bool, error) {
	out, err := w.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(w.Table), ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: o.key}}})
	if err != nil {
		return false, err
	}
	if o.op == "delete" {
		return out.Item == nil, nil
	}
	v, ok := out.Item["ver"].(*types.AttributeValueMemberN)
	return ok && v.Value == strconv.FormatInt(o.ver, 10), nil
}

// Final reads every touched item's final version into the log, and with
// Populate every item's (a Scan).
func (w *DDBWorkload) Final(ctx context.Context) error {
	if len(w.existing) > 0 {
		return w.finalScan(ctx)
	}
	w.mu.Lock()
	keys := make([]string, 0, len(w.touched))
	for k := range w.touched {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	for _, k := range keys {
		out, err := w.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(w.Table), ConsistentRead: aws.Bool(true),
			Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: k}}})
		if err != nil {
			return err
		}
		if out.Item == nil {
			w.Log.SetFinal(w.Table, ddbKey(k), 0, false)
			continue
		}
		v, _ := out.Item["ver"].(*types.AttributeValueMemberN)
		if v == nil {
			return fmt.Errorf("item %s without ver", k)
		}
		ver, err := strconv.ParseInt(v.Value, 10, 64)
		if err != nil {
			return err
		}
		w.Log.SetFinal(w.Table, ddbKey(k), ver, true)
	}
	return nil
}

func (w *DDBWorkload) finalScan(ctx context.Context) error {
	seen := map[string]bool{}
	p := dynamodb.NewScanPaginator(w.Client, &dynamodb.ScanInput{TableName: aws.String(w.Table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, it := range out.Items {
			k := it["pk"].(*types.AttributeValueMemberS).Value
			v, _ := it["ver"].(*types.AttributeValueMemberN)
			if v == nil {
				return fmt.Errorf("item %s without ver", k)
			}
			ver, err := strconv.ParseInt(v.Value, 10, 64)
			if err != nil {
				return err
			}
			seen[k] = true
			w.Log.SetFinal(w.Table, ddbKey(k), ver, true)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range w.existing {
		if !seen[k] {
			w.Log.SetFinal(w.Table, ddbKey(k), 0, false)
		}
	}
	for k := range w.touched {
		if !seen[k] {
			w.Log.SetFinal(w.Table, ddbKey(k), 0, false)
		}
	}
	return nil
}
