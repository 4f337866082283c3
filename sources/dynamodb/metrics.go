package dynamodb

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/sources"
)

type metrics struct {
	received       *sources.Received
	shards         *prometheus.GaugeVec
	getRecords     prometheus.Counter
	apiErrors      *prometheus.CounterVec
	trimmed        prometheus.Counter
	commits        prometheus.Counter
	commitFailures prometheus.Counter
	discoveries    prometheus.Counter

	leasesHeld       prometheus.Gauge
	leasesTaken      prometheus.Counter
	leasesStolen     prometheus.Counter
	leasesLost       prometheus.Counter
	leasesReleased   prometheus.Counter
	leaseRenewErrors prometheus.Counter

	snapItems     prometheus.Counter
	snapDropped   prometheus.Counter
	snapPages     prometheus.Counter
	snapRCU       prometheus.Counter
	snapThrottled prometheus.Counter
	snapRunning   prometheus.Gauge
	snapSegments  prometheus.Gauge
}

// newMetrics creates the source's metrics and registers them with reg
// (nil: not registered). Gauges that are read from the source's state
// (iterator age, lag) are registered by registerGauges.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		received: sources.NewReceived(f, "dynamodb", cdc.OpInsert, cdc.OpUpdate, cdc.OpDelete, cdc.OpRead),
		shards: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcbridge_dynamodb_shards",
			Help: "Shards of the stream by state: reading (with leases: leased by this instance), waiting_parent (a parent shard is not finished yet), leased_elsewhere (with leases: readable, leased by another instance or free), finished.",
		}, []string{"state"}),
		getRecords: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_get_records_total",
			Help: "GetRecords calls made, successful or not.",
		}),
		apiErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_api_errors_total",
			Help: "Failed DynamoDB Streams calls by operation and error code (throttling, expired iterators, trimmed data, 5xx, timeouts).",
		}, []string{"operation", "code"}),
		trimmed: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_trimmed_total",
			Help: "Times records expired from the stream (24-hour retention) before they were read: a gap in the captured changes.",
		}),
		commits: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_checkpoint_commits_total",
			Help: "Checkpoints saved to the checkpoint store.",
		}),
		commitFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_checkpoint_commit_failures_total",
			Help: "Checkpoint saves that failed (retried on the next round).",
		}),
		discoveries: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_shard_discoveries_total",
			Help: "DescribeStream listings of the stream's shards.",
		}),
		leasesHeld: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_dynamodb_leases_held",
			Help: "Shard leases this instance holds (with CDCBRIDGE_CHECKPOINT_STORE=dynamodb://), including lapsed ones whose renewals are overdue.",
		}),
		leasesTaken: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_leases_taken_total",
			Help: "Shard leases taken because they were free or expired (their owner stopped renewing).",
		}),
		leasesStolen: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_leases_stolen_total",
			Help: "Shard leases taken from a live instance that held more than its share.",
		}),
		leasesLost: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_leases_lost_total",
			Help: "Shard leases this instance found taken over by another instance (stolen, or expired while renewals failed).",
		}),
		leasesReleased: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_leases_released_total",
			Help: "Shard leases handed back: shards read to their end, and leases released on shutdown.",
		}),
		leaseRenewErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_lease_renew_errors_total",
			Help: "Lease renewals that failed for another reason than a take-over (throttling, timeouts, network).",
		}),
		snapItems: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_snapshot_items_total",
			Help: "Items loads delivered as read events (accepted by the sink).",
		}),
		snapDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_snapshot_items_dropped_total",
			Help: "Items loads read and dropped because the stream emitted a record of their key meanwhile (the stream carries the newer version).",
		}),
		snapPages: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_snapshot_pages_total",
			Help: "Scan pages loads delivered whole (their progress saved).",
		}),
		snapRCU: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_snapshot_consumed_rcu_total",
			Help: "Read capacity units the loads' Scans consumed, as DynamoDB reported them.",
		}),
		snapThrottled: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_dynamodb_snapshot_throttled_total",
			Help: "Scan requests of loads the table refused for capacity (ProvisionedThroughputExceededException); the load halves its rate.",
		}),
		snapRunning: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_dynamodb_snapshot_running",
			Help: "1 while a load of the table is reading.",
		}),
		snapSegments: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_dynamodb_snapshot_segments_in_progress",
			Help: "Segments of a load being read now.",
		}),
	}
	for _, s := range []string{stateReading.String(), stateWaiting.String(), stateElsewhere.String(), stateFinished.String()} {
		m.shards.WithLabelValues(s)
	}
	return m
}

// registerGauges registers the gauges computed from s at scrape time.
func registerGauges(reg prometheus.Registerer, s *Source) {
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cdcbridge_dynamodb_iterator_age_seconds",
		Help: "Largest over reading shards of now minus the creation time of the newest record read (0 for a shard whose last read found nothing new).",
	}, s.iteratorAge)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cdcbridge_dynamodb_lag_seconds",
		Help: "Now minus the creation time of the oldest record read but not yet accepted by Kinesis; 0 when nothing is pending.",
	}, s.lagSeconds)
}
