package dynamodb

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/cdc"
)

func TestAppendImage(t *testing.T) {
	item := map[string]types.AttributeValue{
		"s":      &types.AttributeValueMemberS{Value: "a \"quoted\" \n line ✓"},
		"n":      &types.AttributeValueMemberN{Value: "123456789012345678901234567890.123456789"},
		"neg":    &types.AttributeValueMemberN{Value: "-0.000001"},
		"exp":    &types.AttributeValueMemberN{Value: "1E+130"},
		"plus":   &types.AttributeValueMemberN{Value: "+5"},
		"dot":    &types.AttributeValueMemberN{Value: ".5"},
		"b":      &types.AttributeValueMemberB{Value: []byte{0, 1, 0xfe, 0xff}},
		"t":      &types.AttributeValueMemberBOOL{Value: true},
		"f":      &types.AttributeValueMemberBOOL{Value: false},
		"null":   &types.AttributeValueMemberNULL{Value: true},
		"ss":     &types.AttributeValueMemberSS{Value: []string{"z", "a"}},
		"ns":     &types.AttributeValueMemberNS{Value: []string{"10", "2.5"}},
		"bs":     &types.AttributeValueMemberBS{Value: [][]byte{[]byte("hi"), {0xff}}},
		"empty":  &types.AttributeValueMemberL{Value: nil},
		"emptyM": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}},
		"l": &types.AttributeValueMemberL{Value: []types.AttributeValue{
			&types.AttributeValueMemberN{Value: "1"},
			&types.AttributeValueMemberS{Value: "x"},
			&types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
				"y": &types.AttributeValueMemberNULL{Value: true},
				"x": &types.AttributeValueMemberL{Value: []types.AttributeValue{&types.AttributeValueMemberBOOL{Value: true}}},
			}},
		}},
	}
	got, err := appendImage(nil, item)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"b":"AAH+/w==","bs":["aGk=","/w=="],"dot":0.5,"empty":[],"emptyM":{},"exp":1E+130,"f":false,` +
		`"l":[1,"x",{"x":[true],"y":null}],"n":123456789012345678901234567890.123456789,"neg":-0.000001,` +
		`"ns":[10,2.5],"null":null,"plus":5,"s":"a \"quoted\" \n line ✓","ss":["z","a"],"t":true}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !json.Valid(got) {
		t.Error("not valid JSON")
	}
	// Deterministic: map order never shows.
	for range 20 {
		again, _ := appendImage(nil, item)
		if string(again) != string(got) {
			t.Fatal("two encodings of the same item differ")
		}
	}
}

func TestAppendNumber(t *testing.T) {
	for _, tt := range []struct{ in, want, canon string }{
		{"0", "0", "0"},
		{"-0", "-0", "0"},
		{"42", "42", "42"},
		{"1.0", "1.0", "1"},
		{"1.50", "1.50", "1.5"},
		{"10E-1", "10E-1", "1"},
		{"0.1E1", "0.1E1", "1"},
		{"1e2", "1e2", "100"},
		{"+5", "5", "5"},
		{"007", "7", "7"},
		{".5", "0.5", "0.5"},
		{"5.", "5", "5"},
		{"-1.23e-5", "-1.23e-5", "-0.0000123"},
		{"12345678901234567890123456789012345678", "12345678901234567890123456789012345678", "12345678901234567890123456789012345678"},
		{"1E+125", "1E+125", "1E125"},
		{"9.9999999999999999999999999999999999999E+125", "9.9999999999999999999999999999999999999E+125", "9.9999999999999999999999999999999999999E125"},
		{"1E-130", "1E-130", "1E-130"},
	} {
		got, err := appendNumber(nil, tt.in)
		if err != nil || string(got) != tt.want {
			t.Errorf("appendNumber(%q) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
		if !json.Valid(got) {
			t.Errorf("appendNumber(%q) = %s: not JSON", tt.in, got)
		}
		canon, err := appendCanonicalNumber(nil, tt.in)
		if err != nil || string(canon) != tt.canon {
			t.Errorf("appendCanonicalNumber(%q) = %s, %v; want %s", tt.in, canon, err, tt.canon)
		}
	}
	for _, bad := range []string{"", "abc", "1.2.3", "--1", "1e", "e5", ".", "1 ", "0x10", "NaN", "Infinity"} {
		if got, err := appendNumber(nil, bad); err == nil {
			t.Errorf("appendNumber(%q) = %s, want an error", bad, got)
		}
	}
}

func TestConvert(t *testing.T) {
	si := &streamInfo{arn: "arn", region: "eu-west-1", table: "orders", viewType: "NEW_AND_OLD_IMAGES",
		hashKey: "pk", rangeKey: "sk", source: "/cdcbridge/dynamodb/eu-west-1/orders"}
	created := time.Date(2026, 11, 26, 10, 15, 2, 0, time.UTC)
	keys := map[string]types.AttributeValue{
		"sk": &types.AttributeValueMemberN{Value: "1.0"},
		"pk": &types.AttributeValueMemberS{Value: "cust#1"},
	}
	rec := types.Record{
		EventID:   aws.String("e1"),
		EventName: types.OperationTypeRemove,
		Dynamodb: &types.StreamRecord{
			ApproximateCreationDateTime: &created,
			Keys:                        keys,
			OldImage: map[string]types.AttributeValue{
				"pk": keys["pk"], "sk": keys["sk"], "v": &types.AttributeValueMemberN{Value: "3"},
			},
			SequenceNumber: aws.String("111100000000012345678"),
			StreamViewType: types.StreamViewTypeNewAndOldImages,
		},
		UserIdentity: &types.Identity{Type: aws.String("Service"), PrincipalId: aws.String("dynamodb.amazonaws.com")},
	}
	got, err := si.convert("shardId-1", &rec)
	if err != nil {
		t.Fatal(err)
	}
	want := &cdc.Event{
		ID:           "e1",
		Source:       "/cdcbridge/dynamodb/eu-west-1/orders",
		Subject:      "orders",
		Time:         created,
		PartitionKey: `orders:["cust#1",1]`,
		Sequence:     "0000000000000000000111100000000012345678",
		Op:           cdc.OpDelete,
		Key:          []byte(`{"pk":"cust#1","sk":1.0}`),
		Before:       []byte(`{"pk":"cust#1","sk":1.0,"v":3}`),
		Info: cdc.SourceInfo{Table: "orders", ShardID: "shardId-1", SequenceNumber: "111100000000012345678",
			EventName: "REMOVE", ViewType: "NEW_AND_OLD_IMAGES", TTL: true},
	}
	if diff := cmp.Diff(want, got.event, cmp.Comparer(func(a, b []byte) bool { return string(a) == string(b) })); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if got.padded != want.Sequence || !got.created.Equal(created) {
		t.Errorf("padded %s created %v", got.padded, got.created)
	}
	env, err := cdc.Encode(got.event)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), `"ttl":true`) || !strings.Contains(string(env), `"after":null`) {
		t.Errorf("envelope %s", env)
	}

	// A user's delete is not TTL; a KEYS_ONLY record has no images.
	rec.UserIdentity = nil
	rec.Dynamodb.OldImage = nil
	rec.Dynamodb.StreamViewType = types.StreamViewTypeKeysOnly
	got, err = si.convert("shardId-1", &rec)
	if err != nil {
		t.Fatal(err)
	}
	if got.event.Info.TTL || got.event.Before != nil || got.event.After != nil || got.event.Info.ViewType != "KEYS_ONLY" {
		t.Errorf("keys-only user delete: %+v", got.event)
	}

	// Long keys are hashed, and the same item always maps to one key.
	long := strings.Repeat("k", 300)
	rec.Dynamodb.Keys = map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: long}, "sk": &types.AttributeValueMemberN{Value: "1"}}
	got, err = si.convert("shardId-1", &rec)
	if err != nil {
		t.Fatal(err)
	}
	if pk := got.event.PartitionKey; len(pk) > 256 || !strings.HasPrefix(pk, "orders:sha256:") {
		t.Errorf("long partition key %q", pk)
	}
	rec.Dynamodb.Keys["sk"] = &types.AttributeValueMemberN{Value: "1.00"}
	again, _ := si.convert("shardId-1", &rec)
	if again.event.PartitionKey != got.event.PartitionKey {
		t.Errorf("1 and 1.00 give different partition keys: %q, %q", got.event.PartitionKey, again.event.PartitionKey)
	}

	for name, mutate := range map[string]func(r *types.Record){
		"no sequence":   func(r *types.Record) { r.Dynamodb.SequenceNumber = nil },
		"bad sequence":  func(r *types.Record) { r.Dynamodb.SequenceNumber = aws.String("12a") },
		"no event id":   func(r *types.Record) { r.EventID = nil },
		"unknown event": func(r *types.Record) { r.EventName = "UPSERT" },
		"no keys":       func(r *types.Record) { r.Dynamodb.Keys = nil },
		"bad number":    func(r *types.Record) { r.Dynamodb.Keys["sk"] = &types.AttributeValueMemberN{Value: "x"} },
	} {
		r := rec
		sr := *rec.Dynamodb
		sr.Keys = map[string]types.AttributeValue{"pk": keys["pk"], "sk": keys["sk"]}
		r.Dynamodb = &sr
		mutate(&r)
		if _, err := si.convert("shardId-1", &r); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseStreamARN(t *testing.T) {
	region, table, label, err := parseStreamARN("arn:aws:dynamodb:eu-central-1:123456789012:table/orders/stream/2026-11-26T10:00:00.000")
	if err != nil || region != "eu-central-1" || table != "orders" || label != "2026-11-26T10:00:00.000" {
		t.Errorf("got %q %q %q %v", region, table, label, err)
	}
	if _, _, _, err := parseStreamARN("arn:aws-cn:dynamodb:cn-north-1:1:table/t/stream/x"); err != nil {
		t.Errorf("China partition: %v", err)
	}
	for _, bad := range []string{"", "orders", "arn:aws:dynamodb:us-east-1:1:table/orders", "arn:aws:kinesis:us-east-1:1:stream/x",
		"arn:aws:dynamodb:us-east-1:1:table/orders/stream/", "arn:aws:dynamodb:us-east-1:1:table//stream/x"} {
		if _, _, _, err := parseStreamARN(bad); err == nil {
			t.Errorf("parseStreamARN(%q): no error", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	arn := "arn:aws:dynamodb:us-east-1:1:table/t/stream/x"
	for _, tt := range []struct {
		name string
		cfg  Config
		want string // substring of the error, "" for none
	}{
		{"table", Config{Table: "t"}, ""},
		{"arn", Config{StreamARN: arn, Start: "latest", OnTrimmed: "skip"}, ""},
		{"neither", Config{}, "exactly one"},
		{"both", Config{Table: "t", StreamARN: arn}, "exactly one"},
		{"bad arn", Config{StreamARN: "nope"}, "not a DynamoDB stream ARN"},
		{"bad start", Config{Table: "t", Start: "beginning"}, "Start"},
		{"bad on trimmed", Config{Table: "t", OnTrimmed: "ignore"}, "OnTrimmed"},
		{"negative", Config{Table: "t", IdleInterval: -1}, "IdleInterval"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.setDefaults()
			err := cfg.validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	cfg := Config{Table: "t"}
	cfg.setDefaults()
	if cfg.Start != StartTrimHorizon || cfg.OnTrimmed != OnTrimmedFail || cfg.IdleInterval != time.Second || cfg.DiscoverInterval != 10*time.Second {
		t.Errorf("defaults %+v", cfg)
	}
	if _, err := New(Config{Table: "t"}, nil, nil, nil, nil, nil); err == nil {
		t.Error("New without clients or store: no error")
	}
}
