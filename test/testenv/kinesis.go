package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// Kinds of Kinesis emulator.
const (
	KindKinesalite  = "kinesalite"
	KindKinesisMock = "kinesis-mock"
)

// Kinesis is a running Kinesis emulator.
type Kinesis struct {
	Endpoint string // http://127.0.0.1:PORT
	Kind     string // KindKinesalite or KindKinesisMock

	dir      string
	proc     *process
	guard    *bodyGuard // kinesalite only
	stopOnce sync.Once
	stopErr  error
}

// StartKinesalite starts kinesalite (in-memory) on a free loopback port.
//
// Streams become ACTIVE at once (kinesalite's default is 500 ms), and the
// shard limit is raised from 10 because kinesalite counts it over all
// streams of the server, which the tests of a package share.
func StartKinesalite() (*Kinesis, error) {
	return retryOnPortRace(func() (*Kinesis, error) {
		return startKinesis(KindKinesalite, func(cache, dir string, port int) (*exec.Cmd, error) {
			pkg, err := npmPackageDir(cache, "kinesalite")
			if err != nil {
				return nil, err
			}
			node, err := lookTool("node")
			if err != nil {
				return nil, err
			}
			cmd := exec.Command(node, filepath.Join(pkg, "cli.js"),
				"--port", strconv.Itoa(port),
				"--createStreamMs", "0", "--deleteStreamMs", "0", "--updateStreamMs", "0",
				"--shardLimit", "1000")
			cmd.Dir = dir
			return cmd, nil
		})
	})
}

// StartKinesisMock starts kinesis-mock (npm package kinesis-local, the
// Scala.js build) on a free loopback port, plain HTTP.
//
// It always opens a TLS port too, so it gets a second free port, and it
// reads its TLS certificate from server.json, by default in its working
// directory; the certificate path is given explicitly so the working
// directory can be the server's own temporary directory. Stream state
// changes take no time, the limits on shards and on-demand streams are
// raised (the tests of a package share the server), and the default
// region and account are pinned so the environment cannot move them.
func StartKinesisMock() (*Kinesis, error) {
	return retryOnPortRace(func() (*Kinesis, error) {
		return startKinesis(KindKinesisMock, func(cache, dir string, port int) (*exec.Cmd, error) {
			pkg, err := npmPackageDir(cache, "kinesis-local")
			if err != nil {
				return nil, err
			}
			node, err := lookTool("node")
			if err != nil {
				return nil, err
			}
			tlsPort, err := freePort()
			if err != nil {
				return nil, err
			}
			cmd := exec.Command(node, filepath.Join(pkg, "main.js"))
			cmd.Dir = dir
			cmd.Env = append(os.Environ(),
				"KINESIS_MOCK_PLAIN_PORT="+strconv.Itoa(port),
				"KINESIS_MOCK_TLS_PORT="+strconv.Itoa(tlsPort),
				"KINESIS_MOCK_CERT_PATH="+filepath.Join(pkg, "server.json"),
				"AWS_REGION=us-east-1",
				"AWS_ACCOUNT_ID=000000000000",
				"SHARD_LIMIT=1000",
				"ON_DEMAND_STREAM_COUNT_LIMIT=100",
				"SHOULD_PERSIST_DATA=false",
				"LOG_LEVEL=WARN",
			)
			for _, v := range []string{
				"CREATE_STREAM_DURATION", "DELETE_STREAM_DURATION",
				"REGISTER_STREAM_CONSUMER_DURATION", "DEREGISTER_STREAM_CONSUMER_DURATION",
				"START_STREAM_ENCRYPTION_DURATION", "STOP_STREAM_ENCRYPTION_DURATION",
				"MERGE_SHARDS_DURATION", "SPLIT_SHARD_DURATION",
				"UPDATE_SHARD_COUNT_DURATION", "UPDATE_STREAM_MODE_DURATION",
			} {
				cmd.Env = append(cmd.Env, v+"=0ms")
			}
			return cmd, nil
		})
	})
}

// startKinesis runs the command that build makes in a new temporary
// directory and waits until ListStreams succeeds.
func startKinesis(kind string, build func(cache, dir string, port int) (*exec.Cmd, error)) (*Kinesis, error) {
	cache, err := NodeCache()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "testenv-"+kind+"-")
	if err != nil {
		return nil, err
	}
	cmd, err := build(cache, dir, port)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %w", kind, err)
	}
	proc, err := startProcess(kind, cmd, filepath.Join(dir, kind+".log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	k := &Kinesis{
		Endpoint: "http://127.0.0.1:" + strconv.Itoa(port),
		Kind:     kind,
		dir:      dir,
		proc:     proc,
	}
	if kind == KindKinesalite {
		if k.guard, err = startBodyGuard(k.Endpoint); err != nil {
			_ = k.Stop()
			return nil, err
		}
		k.Endpoint = k.guard.url()
	}
	// One attempt per probe: the readiness loop does the retrying, and the
	// SDK's backoff would only slow it down.
	probe := kinesis.NewFromConfig(AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(k.Endpoint)
		o.Retryer = aws.NopRetryer{}
	})
	if err := proc.waitReady(60*time.Second, func(ctx context.Context) error {
		_, err := probe.ListStreams(ctx, &kinesis.ListStreamsInput{})
		return err
	}); err != nil {
		_ = k.Stop()
		return nil, err
	}
	track(k)
	return k, nil
}

// Client returns a Kinesis client pointed at the emulator.
func (k *Kinesis) Client() *kinesis.Client {
	return kinesis.NewFromConfig(AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(k.Endpoint)
	})
}

// CreateStream creates a provisioned stream and waits until it is ACTIVE.
// Without a deadline on ctx it waits at most 30 seconds.
func (k *Kinesis) CreateStream(ctx context.Context, name string, shards int32) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	c := k.Client()
	if _, err := c.CreateStream(ctx, &kinesis.CreateStreamInput{
		StreamName: aws.String(name),
		ShardCount: aws.Int32(shards),
	}); err != nil {
		return fmt.Errorf("creating stream %s on %s: %w", name, k.Kind, err)
	}
	for {
		out, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		var notFound *types.ResourceNotFoundException
		switch {
		case err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive:
			return nil
		case err != nil && !errors.As(err, &notFound):
			return fmt.Errorf("waiting for stream %s on %s: %w", name, k.Kind, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for stream %s on %s to become ACTIVE: %w", name, k.Kind, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Log returns the tail of the emulator's log.
func (k *Kinesis) Log() string { return k.proc.log() }

// Stop stops the emulator and removes its directory. Calling it again
// returns the first result.
func (k *Kinesis) Stop() error {
	k.stopOnce.Do(func() {
		untrack(k)
		if k.guard != nil {
			k.guard.close()
		}
		// Both keep their data in memory, so there is nothing to flush;
		// kinesis-mock's graceful shutdown would also wait for clients to
		// close their idle keep-alive connections.
		k.stopErr = k.proc.stop(syscall.SIGKILL, 5*time.Second)
		if err := os.RemoveAll(k.dir); err != nil && k.stopErr == nil {
			k.stopErr = err
		}
	})
	return k.stopErr
}
