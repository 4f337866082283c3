package kinesis

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the producer's Prometheus metrics (names in DESIGN.md).
// Labels are low-cardinality: results, error codes, never a key.
type metrics struct {
	requests      *prometheus.CounterVec // result
	putDuration   prometheus.Histogram
	failedRecords *prometheus.CounterVec // code
	retries       prometheus.Counter
	batchRecords  prometheus.Histogram
	batchBytes    prometheus.Histogram
	inflightEv    prometheus.Gauge
	inflightBytes prometheus.Gauge
	dlqRecords    *prometheus.CounterVec // reason
	delivered     prometheus.Counter
	throttleWait  prometheus.Counter
	throttleWaits prometheus.Counter
	shardRefresh  prometheus.Counter
	shards        prometheus.Gauge
	userPerAgg    prometheus.Histogram
	aggBytes      *prometheus.CounterVec // form
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_put_requests_total",
			Help: "PutRecords requests by result: ok, partial (some entries failed), throttled, timeout, invalid, expired_credentials, fatal, error.",
		}, []string{"result"}),
		putDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_put_duration_seconds",
			Help:    "Duration of one PutRecords attempt.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		failedRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_failed_records_total",
			Help: "Kinesis records that failed, by error code: the entry's code, or for every entry of a failed request the request's code or transport failure (timeout, connection reset, ...); other codes are \"other\".",
		}, []string{"code"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_retries_total",
			Help: "Kinesis records sent again after a failed or ambiguous attempt.",
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_batch_records",
			Help:    "Kinesis records per PutRecords request.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 200, 300, 400, 500},
		}),
		batchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_batch_bytes",
			Help:    "Data plus partition key bytes per PutRecords request.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 9),
		}),
		inflightEv: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_inflight_events",
			Help: "Events accepted by the sink and not yet acknowledged.",
		}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_inflight_bytes",
			Help: "Budget bytes held by events accepted by the sink and not yet acknowledged.",
		}),
		dlqRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_dlq_records_total",
			Help: "Events written to the dead-letter directory, by reason (oversize, invalid).",
		}, []string{"reason"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_events_delivered_total",
			Help: "Events acknowledged after Kinesis accepted them (or their dead-letter placeholder).",
		}),
		throttleWait: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_throttle_wait_seconds_total",
			Help: "Time shards spent waiting for their token buckets (planned pacing below the shard limits).",
		}),
		throttleWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_throttle_waits_total",
			Help: "Times a shard had to wait for its token buckets.",
		}),
		shardRefresh: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_shard_map_refreshes_total",
			Help: "Shard map reloads (start, shard count change, or a put result in another shard than predicted).",
		}),
		shards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_kinesis_shards",
			Help: "Open shards of the stream.",
		}),
		userPerAgg: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_aggregated_user_records",
			Help:    "User records per KPL aggregated record.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500},
		}),
		aggBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_aggregate_bytes_total",
			Help: "Bytes of the aggregates built with CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip, before (raw) and after (compressed) compression.",
		}, []string{"form"}),
	}
	for _, r := range []string{"ok", "partial", "throttled", "timeout", "invalid", "expired_credentials", "fatal", "error"} {
		m.requests.WithLabelValues(r)
	}
	for _, r := range []string{"oversize", "invalid"} {
		m.dlqRecords.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.putDuration, m.failedRecords, m.retries, m.batchRecords, m.batchBytes,
			m.inflightEv, m.inflightBytes, m.dlqRecords, m.delivered, m.throttleWait, m.throttleWaits,
			m.shardRefresh, m.shards, m.userPerAgg, m.aggBytes)
	}
	return m
}
