package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcbridge/cdcbridge/checkpoint"
	ddbstore "github.com/cdcbridge/cdcbridge/checkpoint/dynamodb"
	filestore "github.com/cdcbridge/cdcbridge/checkpoint/file"
	"github.com/cdcbridge/cdcbridge/internal/fence"
	kinesissink "github.com/cdcbridge/cdcbridge/sink/kinesis"
	ddbsource "github.com/cdcbridge/cdcbridge/sources/dynamodb"
	pgsource "github.com/cdcbridge/cdcbridge/sources/postgres"
)

// openStore opens the configured checkpoint store; readOnly opens a file
// store without taking it from a running bridge (for commands that show
// what it saved). shared is the same store when instances share it (a
// DynamoDB table, where they also share a stream's shards through leases);
// nil for a file.
func openStore(ctx context.Context, cfg *Config, awsCfg aws.Config, readOnly bool) (store checkpoint.Store, shared *ddbstore.Store, err error) {
	switch cfg.Store.Scheme {
	case "file":
		if readOnly {
			store, err = filestore.OpenReadOnly(cfg.Store.Target)
		} else {
			store, err = filestore.Open(cfg.Store.Target)
		}
	case "dynamodb":
		shared, err = ddbstore.Open(ctx, dynamodb.NewFromConfig(awsCfg), cfg.Store.Target)
		store = shared
	default:
		err = fmt.Errorf("unknown scheme %q", cfg.Store.Scheme)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening checkpoint store (CDCBRIDGE_CHECKPOINT_STORE): %w", err)
	}
	return store, shared, nil
}

// build wires the configured source, checkpoint store and sink.
func build(ctx context.Context, cfg *Config, reg *prometheus.Registry, log *slog.Logger, h *health) (*pipeline, error) {
	awsCfg, err := loadAWSConfig(ctx)
	if err != nil {
		return nil, err
	}
	p := &pipeline{}
	fail := func(err error) (*pipeline, error) {
		for i := len(p.closers) - 1; i >= 0; i-- {
			_ = p.closers[i]()
		}
		return nil, err
	}

	store, shared, err := openStore(ctx, cfg, awsCfg, false)
	if err != nil {
		return fail(err)
	}
	p.closers = append(p.closers, store.Close)

	sinkCfg := cfg.Sink
	sinkCfg.Heartbeat = h.heartbeat("kinesis sink")
	// Record sends pass the source's fence: an instance whose lease may
	// have moved stops sending (see internal/fence).
	gate := fence.New(0)
	kc := kinesissink.NewClient(awsCfg, sinkCfg, func(o *kinesis.Options) { o.HTTPClient = gate.Client(o.HTTPClient, fence.PutRecords) })
	producer, err := kinesissink.New(sinkCfg, kc, reg, log.With("component", "sink"))
	if err != nil {
		return fail(fmt.Errorf("kinesis sink: %w", err))
	}
	p.sink = producer
	h.add("sink", producer)

	switch cfg.Source {
	case "postgres":
		pc := cfg.Postgres
		pc.Heartbeat = h.heartbeat("postgres source")
		pc.Fence = gate
		pc.Budget = producer
		src, err := pgsource.New(pc, store, reg, log.With("component", "postgres"))
		if err != nil {
			return fail(fmt.Errorf("postgres source: %w", err))
		}
		p.source = src
	case "dynamodb":
		dc := cfg.DynamoDB
		dc.Heartbeat = h.heartbeat("dynamodb source")
		if shared != nil {
			// A shared store means shared shards: leases in the same table.
			if dc.Leases, err = ddbstore.NewLeases(shared, leaseOwner()); err != nil {
				return fail(err)
			}
		}
		dc.Fence = gate
		src, err := ddbsource.New(dc, dynamodb.NewFromConfig(awsCfg), streamsClient(awsCfg), store, reg, log.With("component", "dynamodb"))
		if err != nil {
			return fail(fmt.Errorf("dynamodb source: %w", err))
		}
		p.source = src
	}
	h.add("source", p.source)
	return p, nil
}

// leaseOwner names this process in lease tables: host, pid and a random
// suffix, so that a restarted process never passes for its predecessor.
func leaseOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
}

// streamsClient allows one idle connection per shard reader: every shard
// polls at once, and the SDK's default keeps only a few per host.
func streamsClient(awsCfg aws.Config) *dynamodbstreams.Client {
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConnsPerHost = 256
	})
	return dynamodbstreams.NewFromConfig(awsCfg, func(o *dynamodbstreams.Options) { o.HTTPClient = httpClient })
}
