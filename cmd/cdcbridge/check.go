package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	ddbsource "github.com/cdcbridge/cdcbridge/sources/dynamodb"
)

// checkResult is one line of `cdcbridge check`.
type checkResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, warn or fail
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func ok(name, format string, args ...any) checkResult {
	return checkResult{Name: name, Status: "ok", Detail: fmt.Sprintf(format, args...)}
}

func warn(name, fix, format string, args ...any) checkResult {
	return checkResult{Name: name, Status: "warn", Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func failed(name, fix, format string, args ...any) checkResult {
	return checkResult{Name: name, Status: "fail", Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the results as a JSON array")
	timeout := fs.Duration("timeout", 20*time.Second, "overall time limit")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	results := preflight(ctx)
	failures := 0
	for _, r := range results {
		if r.Status == "fail" {
			failures++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(results)
	} else {
		for _, r := range results {
			line := fmt.Sprintf("%-4s  %-22s %s", r.Status, r.Name, r.Detail)
			if r.Fix != "" {
				line += "\n      fix: " + r.Fix
			}
			fmt.Fprintln(stdout, line)
		}
	}
	if failures > 0 {
		if !*asJSON {
			fmt.Fprintf(stdout, "%d check(s) failed\n", failures)
		}
		return exitFailed
	}
	return exitOK
}

func preflight(ctx context.Context) []checkResult {
	cfg, err := loadConfig()
	if err != nil {
		var ce configError
		if errors.As(err, &ce) {
			out := make([]checkResult, 0, len(ce))
			for _, p := range ce {
				out = append(out, failed("configuration", "see cdcbridge config", "%s", p))
			}
			return out
		}
		return []checkResult{failed("configuration", "", "%v", err)}
	}
	results := []checkResult{ok("configuration", "source %s, stream %s", cfg.Source, cfg.Sink.Stream)}
	awsCfg, err := loadAWSConfig(ctx)
	if err != nil {
		return append(results, failed("aws configuration", "set AWS_REGION and credentials", "%v", err))
	}
	results = append(results, checkCredentials(ctx, awsCfg)...)
	results = append(results, checkKinesis(ctx, cfg, kinesis.NewFromConfig(awsCfg))...)
	results = append(results, checkStore(ctx, cfg, awsCfg))
	switch cfg.Source {
	case "postgres":
		results = append(results, checkPostgres(ctx, cfg)...)
	case "dynamodb":
		results = append(results, checkDynamoDB(ctx, cfg, dynamodb.NewFromConfig(awsCfg), dynamodbstreams.NewFromConfig(awsCfg))...)
	}
	return results
}

func checkCredentials(ctx context.Context, awsCfg aws.Config) []checkResult {
	creds, err := awsCfg.Credentials.Retrieve(ctx)
	if err != nil {
		return []checkResult{failed("aws credentials", "provide credentials through the SDK chain (environment, web identity, instance role)", "%v", err)}
	}
	out := []checkResult{ok("aws credentials", "from %s, key %s", creds.Source, maskKey(creds.AccessKeyID))}
	// Ask STS who we are only when the calls would go where the bridge's
	// own calls go: with emulator endpoints configured and no STS endpoint,
	// an identity call would leave for the real AWS.
	if os.Getenv("AWS_ENDPOINT_URL_KINESIS") != "" && os.Getenv("AWS_ENDPOINT_URL") == "" && os.Getenv("AWS_ENDPOINT_URL_STS") == "" {
		return append(out, warn("aws identity", "", "not checked: a custom Kinesis endpoint is set and no STS endpoint (AWS_ENDPOINT_URL_STS)"))
	}
	id, err := sts.NewFromConfig(awsCfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return append(out, warn("aws identity", "check network access to STS", "GetCallerIdentity: %v", err))
	}
	return append(out, ok("aws identity", "%s (account %s)", aws.ToString(id.Arn), aws.ToString(id.Account)))
}

func maskKey(k string) string {
	if len(k) <= 4 {
		return "****"
	}
	return k[:4] + strings.Repeat("*", len(k)-4)
}

func awsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func checkKinesis(ctx context.Context, cfg *Config, client *kinesis.Client) []checkResult {
	in := &kinesis.DescribeStreamSummaryInput{}
	if strings.HasPrefix(cfg.Sink.Stream, "arn:") {
		in.StreamARN = aws.String(cfg.Sink.Stream)
	} else {
		in.StreamName = aws.String(cfg.Sink.Stream)
	}
	out, err := client.DescribeStreamSummary(ctx, in)
	if err != nil {
		switch awsCode(err) {
		case "ResourceNotFoundException":
			return []checkResult{failed("kinesis stream", "create it (aws kinesis create-stream --stream-name "+cfg.Sink.Stream+" --stream-mode-details StreamMode=ON_DEMAND) or fix CDCBRIDGE_KINESIS_STREAM",
				"stream %s does not exist", cfg.Sink.Stream)}
		case "AccessDeniedException":
			return []checkResult{failed("kinesis stream", "grant kinesis:DescribeStreamSummary, kinesis:ListShards and kinesis:PutRecords on the stream (deploy/iam)", "%v", err)}
		}
		return []checkResult{failed("kinesis stream", "check AWS_REGION, AWS_ENDPOINT_URL_KINESIS and network access", "DescribeStreamSummary %s: %v", cfg.Sink.Stream, err)}
	}
	s := out.StreamDescriptionSummary
	var res []checkResult
	switch s.StreamStatus {
	case ktypes.StreamStatusActive, ktypes.StreamStatusUpdating:
		res = append(res, ok("kinesis stream", "%s is %s", aws.ToString(s.StreamARN), s.StreamStatus))
	case ktypes.StreamStatusCreating:
		res = append(res, warn("kinesis stream", "wait until it is ACTIVE", "%s is CREATING", aws.ToString(s.StreamARN)))
	default:
		res = append(res, failed("kinesis stream", "recreate the stream or point CDCBRIDGE_KINESIS_STREAM at another", "%s is %s", aws.ToString(s.StreamARN), s.StreamStatus))
	}
	mode := "PROVISIONED"
	if s.StreamModeDetails != nil {
		mode = string(s.StreamModeDetails.StreamMode)
	}
	res = append(res, ok("kinesis capacity", "%s, %d open shard(s)", mode, aws.ToInt32(s.OpenShardCount)))
	if s.RecordDistributionStrategy != "" && strings.EqualFold(string(s.RecordDistributionStrategy), "AUTO") && cfg.Sink.Ordering == "key" {
		res = append(res, failed("kinesis distribution", "switch the stream back to partition-key distribution, or set CDCBRIDGE_ORDERING=none and accept that changes of one row may reorder",
			"RecordDistributionStrategy AUTO ignores partition keys, so per-row order (CDCBRIDGE_ORDERING=key) is impossible"))
	} else {
		strategy := string(s.RecordDistributionStrategy)
		if strategy == "" {
			strategy = "by partition key (default)"
		}
		res = append(res, ok("kinesis distribution", "%s", strategy))
	}
	res = append(res, checkAggregation(cfg, strings.EqualFold(string(s.RecordDistributionStrategy), "AUTO")))
	if s.MaxRecordSizeInKiB == nil {
		res = append(res, ok("kinesis record size", "1024 KiB (not reported; the Kinesis default)"))
	} else {
		res = append(res, ok("kinesis record size", "%d KiB", aws.ToInt32(s.MaxRecordSizeInKiB)))
	}
	// PutRecords with no records writes nothing; Kinesis authorizes the
	// call before it validates the empty list, so AccessDenied means the
	// permission is missing and a validation error means it is there.
	_, err = client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: in.StreamName, StreamARN: in.StreamARN, Records: []ktypes.PutRecordsRequestEntry{}})
	switch code := awsCode(err); {
	case err == nil || code == "ValidationException" || code == "InvalidArgumentException" || code == "SerializationException":
		res = append(res, ok("kinesis put permission", "probe: PutRecords with no records was authorized (nothing written)"))
	case code == "AccessDeniedException" || strings.HasPrefix(code, "KMS"):
		res = append(res, failed("kinesis put permission", "grant kinesis:PutRecords (and kms:GenerateDataKey for encrypted streams)", "probe: %v", err))
	default:
		res = append(res, warn("kinesis put permission", "", "probe inconclusive: %v", err))
	}
	return res
}

func checkStore(ctx context.Context, cfg *Config, awsCfg aws.Config) checkResult {
	switch cfg.Store.Scheme {
	case "file":
		dir := filepath.Dir(cfg.Store.Target)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return failed("checkpoint store", "create the directory and make it writable for the bridge's user (a persistent volume)", "%v", err)
		}
		f, err := os.CreateTemp(dir, ".cdcbridge-check-*")
		if err != nil {
			return failed("checkpoint store", "make "+dir+" writable for the bridge's user", "%v", err)
		}
		f.Close()
		os.Remove(f.Name())
		return ok("checkpoint store", "%s is writable", dir)
	case "dynamodb":
		_, err := dynamodb.NewFromConfig(awsCfg).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(cfg.Store.Target)})
		if awsCode(err) == "ResourceNotFoundException" {
			return warn("checkpoint store", "allow dynamodb:CreateTable, or create it with partition key pk (S) and sort key sk (S)", "table %s does not exist yet; the bridge creates it", cfg.Store.Target)
		}
		if err != nil {
			return failed("checkpoint store", "grant dynamodb:DescribeTable, GetItem, PutItem, UpdateItem, Query on the table", "%v", err)
		}
		return ok("checkpoint store", "table %s exists", cfg.Store.Target)
	}
	return failed("checkpoint store", "", "unknown scheme %q", cfg.Store.Scheme)
}

func checkDynamoDB(ctx context.Context, cfg *Config, db *dynamodb.Client, streams *dynamodbstreams.Client) []checkResult {
	arn := cfg.DynamoDB.StreamARN
	if cfg.DynamoDB.Table != "" {
		out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(cfg.DynamoDB.Table)})
		if err != nil {
			return []checkResult{failed("dynamodb table", "check CDCBRIDGE_DYNAMODB_TABLE and dynamodb:DescribeTable permission", "%v", err)}
		}
		spec := out.Table.StreamSpecification
		if spec == nil || !aws.ToBool(spec.StreamEnabled) || out.Table.LatestStreamArn == nil {
			return []checkResult{failed("dynamodb stream", "aws dynamodb update-table --table-name "+cfg.DynamoDB.Table+" --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES",
				"table %s has no stream enabled", cfg.DynamoDB.Table)}
		}
		arn = aws.ToString(out.Table.LatestStreamArn)
	}
	out, err := streams.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn)})
	if err != nil {
		return []checkResult{failed("dynamodb stream", "check the stream ARN and dynamodb:DescribeStream permission", "%v", err)}
	}
	d := out.StreamDescription
	res := []checkResult{ok("dynamodb stream", "%s is %s, %d shard(s) in the first page", arn, d.StreamStatus, len(d.Shards))}
	switch view := string(d.StreamViewType); view {
	case "NEW_AND_OLD_IMAGES":
		res = append(res, ok("dynamodb view type", "%s", view))
	default:
		res = append(res, warn("dynamodb view type", "NEW_AND_OLD_IMAGES gives complete before and after images",
			"%s: events will lack before and/or after images", view))
	}
	return append(res, checkLoad(ctx, cfg, db))
}

// checkLoad estimates the initial load of the table (run when the stream
// has no checkpoint yet) and says whether it would be refused as too long.
func checkLoad(ctx context.Context, cfg *Config, db *dynamodb.Client) checkResult {
	if cfg.DynamoDB.Snapshot != ddbsource.SnapshotInitial {
		return ok("dynamodb snapshot", "CDCBRIDGE_DYNAMODB_SNAPSHOT=%s: no initial load (cdcbridge snapshot TABLE asks for one)", cfg.DynamoDB.Snapshot)
	}
	est, err := ddbsource.EstimateLoad(ctx, cfg.DynamoDB, db)
	if err != nil {
		return failed("dynamodb snapshot", "grant dynamodb:DescribeTable and dynamodb:Scan on the table", "%v", err)
	}
	switch {
	case est.TooLong && !cfg.DynamoDB.SnapshotConfirmLong:
		return failed("dynamodb snapshot", "raise CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU, or set CDCBRIDGE_DYNAMODB_SNAPSHOT_CONFIRM_LONG=true to accept it",
			"the initial load (%s) comes near or over the stream's 24-hour retention: the bridge refuses to start it", est)
	case est.TooLong:
		return warn("dynamodb snapshot", "raise CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU to shorten it",
			"the initial load (%s) comes near or over the stream's 24-hour retention; confirmed with CDCBRIDGE_DYNAMODB_SNAPSHOT_CONFIRM_LONG", est)
	}
	return ok("dynamodb snapshot", "initial load when the stream has no checkpoint yet: %s", est)
}

// checkAggregation says what CDCBRIDGE_KINESIS_AGGREGATE asks of consumers
// (/status counts the aggregates sent: sink.aggregates_delivered_total).
func checkAggregation(cfg *Config, auto bool) checkResult {
	const deagg = "consumers must de-aggregate KPL records (KCL, Lambda with the KPL de-aggregator, cdcbridge tail, examples/consumer)"
	switch {
	case !cfg.Sink.Aggregate && !cfg.Sink.AggregateHot:
		return ok("kinesis aggregation", "off: one Kinesis record per change")
	case auto:
		return failed("kinesis aggregation", "set CDCBRIDGE_KINESIS_AGGREGATE=false or switch the stream back to partition-key distribution",
			"RecordDistributionStrategy AUTO ignores explicit hash keys, so aggregates could land where KCL drops their records")
	}
	what := "every record in KPL aggregates"
	if cfg.Sink.AggregateHot {
		what = "hot: a row with two or more changes queued sends them as one KPL aggregate"
	}
	if cfg.Sink.CompressAggregates {
		return ok("kinesis aggregation", "%s, gzipped; consumers must gunzip a record that starts with 1F 8B and de-aggregate it (cdcbridge tail and examples/consumer do; KCL and the Lambda KPL de-aggregator do not gunzip)", what)
	}
	return ok("kinesis aggregation", "%s; %s", what, deagg)
}
