package dedupe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Store is an idempotency store shared by every instance of a consumer (a
// Lambda function with a parallelization factor, KCL workers), kept in a
// DynamoDB table. Where a [Filter] remembers what one process saw, a Store
// lets many processes agree:
//
//   - Claim takes an event's idempotency key (source and id) with a
//     conditional write: of several instances claiming the same key at
//     once, exactly one gets [Claimed]; the others learn it is
//     [InProgress] or already [Done].
//   - The winner processes the event, then Confirms (the key is done and
//     stays so for TTL) or Releases it (another attempt may claim it at
//     once). A claim that is neither, because its holder crashed, expires
//     after ClaimTimeout and can be claimed again: the event is not lost.
//   - With Monotonic, the last confirmed sequence of each partition key is
//     kept too, and an event at or below it is refused as [Stale], so a
//     consumer never applies an older change of a row after a newer one.
//
// Guarantees: a key is Claimed by one caller at a time (until its claim
// expires), Confirm succeeds only for the current claim (ErrClaimLost
// otherwise), and a Done key is never claimed again before TTL passes.
// Items carry expires_at (unix seconds) for DynamoDB's Time to Live, which
// deletes them some time after; the store treats an item past expires_at
// as absent, so deletion delays do not matter.
//
// The table has a string partition key "pk" (EnsureTable creates it):
//
//	pk             S  "id " + Key(source, id), or "seq " + source and partition key
//	state          S  "claimed" or "done" (id items)
//	owner, token   S  the claim's owner and its unique token
//	claimed_until  N  unix milliseconds the claim holds until
//	sequence       S  (seq items) the last confirmed sequence
//	expires_at     N  unix seconds; DynamoDB's TTL attribute
type Store struct {
	client *dynamodb.Client
	cfg    StoreConfig
}

// StoreConfig configures a [Store]. Zero values take the defaults.
type StoreConfig struct {
	// Table is the DynamoDB table (required).
	Table string
	// TTL is how long a confirmed key is remembered (default 48h: longer
	// than Kinesis's default retention, so a re-read of the whole stream
	// still finds its keys).
	TTL time.Duration
	// ClaimTimeout is how long a claim holds before another caller may
	// take it over (default 5m: longer than the processing of one batch;
	// a Lambda function's timeout is a good value).
	ClaimTimeout time.Duration
	// Monotonic also keeps the last confirmed sequence of each partition
	// key and refuses events at or below it (Stale).
	Monotonic bool
	// Owner names this caller in claims (default: a random id), for people
	// reading the table.
	Owner string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *StoreConfig) validate() error {
	var errs []error
	if c.Table == "" {
		errs = append(errs, errors.New("dedupe: StoreConfig.Table is required"))
	}
	if c.TTL < 0 || c.ClaimTimeout < 0 {
		errs = append(errs, fmt.Errorf("dedupe: TTL %v and ClaimTimeout %v must not be negative", c.TTL, c.ClaimTimeout))
	}
	return errors.Join(errs...)
}

// Attribute names of the store's items.
const (
	attrPK      = "pk"
	attrState   = "state"
	attrOwner   = "owner"
	attrToken   = "token"
	attrUntil   = "claimed_until"
	attrSeq     = "sequence"
	attrExpires = "expires_at"

	stateClaimed = "claimed"
	stateDone    = "done"
)

// ErrClaimLost is returned by Confirm and Release when the claim expired
// and another caller claimed the key since.
var ErrClaimLost = errors.New("dedupe: the claim expired and another caller holds the key")

// NewStore returns a store on cfg.Table. It does no I/O; see EnsureTable.
func NewStore(client *dynamodb.Client, cfg StoreConfig) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("dedupe: nil DynamoDB client")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 48 * time.Hour
	}
	if cfg.ClaimTimeout == 0 {
		cfg.ClaimTimeout = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Owner == "" {
		cfg.Owner = randomToken()
	}
	return &Store{client: client, cfg: cfg}, nil
}

func randomToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Event is what a Store needs of an event: its idempotency key and, with
// Monotonic, its partition key and sequence.
type Event struct {
	Source, ID             string
	PartitionKey, Sequence string
}

// Outcome is the result of a Claim.
type Outcome int

const (
	// Claimed: this caller holds the key; it processes the event, then
	// calls Confirm or Release.
	Claimed Outcome = iota + 1
	// Done: the event was processed and confirmed before: skip it.
	Done
	// InProgress: another caller holds an unexpired claim: the event is
	// being processed elsewhere. Retry later (or report the record as
	// failed) rather than skip it, since that caller may still Release.
	InProgress
	// Stale (Monotonic): a later change of the same partition key was
	// confirmed already: skip the event.
	Stale
)

func (o Outcome) String() string {
	switch o {
	case Claimed:
		return "claimed"
	case Done:
		return "done"
	case InProgress:
		return "in progress"
	case Stale:
		return "stale"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Claim is a Claim call's result; when Outcome is Claimed it is the
// handle for Confirm or Release.
type Claim struct {
	Outcome Outcome
	Event   Event
	// Holder is the owner of the claim or confirmation found (not
	// Claimed).
	Holder string
	token  string
}

func idKey(e Event) string { return "id " + Key(e.Source, e.ID) }

func seqKey(e Event) string { return "seq " + Key(e.Source, e.PartitionKey) }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

// Claim tries to take e's idempotency key. It succeeds (Claimed) when the
// key is new, its earlier claim expired or was released, or its
// confirmation passed TTL; otherwise it reports why not.
func (s *Store) Claim(ctx context.Context, e Event) (Claim, error) {
	if e.Source == "" || e.ID == "" {
		return Claim{}, errors.New("dedupe: an event needs a source and an id")
	}
	now := s.cfg.Now()
	if s.cfg.Monotonic && e.Sequence != "" {
		last, err := s.lastSequence(ctx, e, now)
		if err != nil {
			return Claim{}, err
		}
		if last != "" && e.Sequence <= last {
			return Claim{Outcome: Stale, Event: e}, nil
		}
	}
	token := randomToken()
	_, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.cfg.Table),
		Item: map[string]types.AttributeValue{
			attrPK:      str(idKey(e)),
			attrState:   str(stateClaimed),
			attrOwner:   str(s.cfg.Owner),
			attrToken:   str(token),
			attrUntil:   num(now.Add(s.cfg.ClaimTimeout).UnixMilli()),
			attrExpires: num(now.Add(s.cfg.ClaimTimeout + s.cfg.TTL).Unix()),
		},
		// Free: no item, an expired claim, or an item past its TTL.
		ConditionExpression: aws.String("attribute_not_exists(#pk) OR (#st = :claimed AND #until < :nowms) OR #exp < :nows"),
		ExpressionAttributeNames: map[string]string{
			"#pk": attrPK, "#st": attrState, "#until": attrUntil, "#exp": attrExpires,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":claimed": str(stateClaimed), ":nowms": num(now.UnixMilli()), ":nows": num(now.Unix()),
		},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		c := Claim{Outcome: InProgress, Event: e}
		if o, ok := failed.Item[attrOwner].(*types.AttributeValueMemberS); ok {
			c.Holder = o.Value
		}
		if st, ok := failed.Item[attrState].(*types.AttributeValueMemberS); ok && st.Value == stateDone {
			c.Outcome = Done
		}
		return c, nil
	}
	if err != nil {
		return Claim{}, fmt.Errorf("dedupe: claiming %s in %s: %w", e.ID, s.cfg.Table, err)
	}
	return Claim{Outcome: Claimed, Event: e, token: token}, nil
}

// lastSequence reads the last confirmed sequence of e's partition key ("":
// none, or expired).
func (s *Store) lastSequence(ctx context.Context, e Event, now time.Time) (string, error) {
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.cfg.Table),
		Key:            map[string]types.AttributeValue{attrPK: str(seqKey(e))},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("dedupe: reading the sequence of %s in %s: %w", e.PartitionKey, s.cfg.Table, err)
	}
	if exp, ok := out.Item[attrExpires].(*types.AttributeValueMemberN); ok {
		if n, _ := strconv.ParseInt(exp.Value, 10, 64); n < now.Unix() {
			return "", nil
		}
	}
	if v, ok := out.Item[attrSeq].(*types.AttributeValueMemberS); ok {
		return v.Value, nil
	}
	return "", nil
}

// Confirm records that the claimed event was processed: its key is Done
// for TTL and, with Monotonic, its sequence becomes its partition key's
// last one (never moving backwards). It fails with ErrClaimLost when the
// claim expired and another caller claimed the key since; the event was
// then possibly processed twice, which the caller's processing must
// tolerate (as at-least-once delivery requires anyway).
func (s *Store) Confirm(ctx context.Context, c Claim) error {
	if c.Outcome != Claimed {
		return fmt.Errorf("dedupe: Confirm of a claim whose outcome is %s", c.Outcome)
	}
	now := s.cfg.Now()
	_, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.cfg.Table),
		Key:                       map[string]types.AttributeValue{attrPK: str(idKey(c.Event))},
		UpdateExpression:          aws.String("SET #st = :done, #exp = :exp REMOVE #until"),
		ConditionExpression:       aws.String("#tok = :tok"),
		ExpressionAttributeNames:  map[string]string{"#st": attrState, "#exp": attrExpires, "#until": attrUntil, "#tok": attrToken},
		ExpressionAttributeValues: map[string]types.AttributeValue{":done": str(stateDone), ":exp": num(now.Add(s.cfg.TTL).Unix()), ":tok": str(c.token)},
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return fmt.Errorf("confirming %s: %w", c.Event.ID, ErrClaimLost)
	}
	if err != nil {
		return fmt.Errorf("dedupe: confirming %s in %s: %w", c.Event.ID, s.cfg.Table, err)
	}
	if s.cfg.Monotonic && c.Event.Sequence != "" {
		return s.advance(ctx, c.Event, now)
	}
	return nil
}

// advance moves e's partition key's last sequence up to e.Sequence.
func (s *Store) advance(ctx context.Context, e Event, now time.Time) error {
	_, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.cfg.Table),
		Key:                       map[string]types.AttributeValue{attrPK: str(seqKey(e))},
		UpdateExpression:          aws.String("SET #seq = :seq, #exp = :exp"),
		ConditionExpression:       aws.String("attribute_not_exists(#seq) OR #seq < :seq OR #exp < :nows"),
		ExpressionAttributeNames:  map[string]string{"#seq": attrSeq, "#exp": attrExpires},
		ExpressionAttributeValues: map[string]types.AttributeValue{":seq": str(e.Sequence), ":exp": num(now.Add(s.cfg.TTL).Unix()), ":nows": num(now.Unix())},
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return nil // a later sequence was confirmed meanwhile: keep it
	}
	if err != nil {
		return fmt.Errorf("dedupe: recording the sequence of %s in %s: %w", e.PartitionKey, s.cfg.Table, err)
	}
	return nil
}

// Release gives a claim back without confirming: processing failed, and
// another attempt may claim the key at once. It fails with ErrClaimLost
// when the claim had expired and another caller holds the key now.
func (s *Store) Release(ctx context.Context, c Claim) error {
	if c.Outcome != Claimed {
		return fmt.Errorf("dedupe: Release of a claim whose outcome is %s", c.Outcome)
	}
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.cfg.Table),
		Key:                       map[string]types.AttributeValue{attrPK: str(idKey(c.Event))},
		ConditionExpression:       aws.String("#tok = :tok"),
		ExpressionAttributeNames:  map[string]string{"#tok": attrToken},
		ExpressionAttributeValues: map[string]types.AttributeValue{":tok": str(c.token)},
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return fmt.Errorf("releasing %s: %w", c.Event.ID, ErrClaimLost)
	}
	if err != nil {
		return fmt.Errorf("dedupe: releasing %s in %s: %w", c.Event.ID, s.cfg.Table, err)
	}
	return nil
}

// tableWait bounds how long EnsureTable waits for a new table.
const tableWait = 5 * time.Minute

// EnsureTable creates the store's table when it is missing (on-demand
// billing, Time to Live on expires_at) and waits until it is active.
func (s *Store) EnsureTable(ctx context.Context) error {
	name := aws.String(s.cfg.Table)
	_, err := s.client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: name})
	var notFound *types.ResourceNotFoundException
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &notFound):
		return fmt.Errorf("dedupe: describing table %s: %w", s.cfg.Table, err)
	}
	_, err = s.client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            name,
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(attrPK), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash}},
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("dedupe: creating table %s: %w", s.cfg.Table, err)
	}
	w := dynamodb.NewTableExistsWaiter(s.client, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 500*time.Millisecond, 5*time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: name}, tableWait); err != nil {
		return fmt.Errorf("dedupe: waiting for table %s: %w", s.cfg.Table, err)
	}
	_, err = s.client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               name,
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(attrExpires), Enabled: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("dedupe: enabling Time to Live on %s: %w", s.cfg.Table, err)
	}
	return nil
}
