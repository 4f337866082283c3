package postgres

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/sources"
)

type metrics struct {
	received             *sources.Received
	slotLagBytes         prometheus.Gauge
	confirmedLSN         prometheus.Gauge
	role                 *prometheus.GaugeVec
	snapRows             *prometheus.CounterVec
	snapTablesInProgress prometheus.Gauge
	snapRunning          prometheus.Gauge
	slotLost             *prometheus.CounterVec
	reconnects           prometheus.Counter
	statusUpdates        prometheus.Counter
	pubChanges           *prometheus.CounterVec
	skippedTables        prometheus.Gauge
	serverInfo           *prometheus.GaugeVec
	timeline             prometheus.Gauge
	failoverSlot         prometheus.Gauge
}

// newMetrics creates the source's metrics and registers them with reg
// (nil: not registered).
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		received: sources.NewReceived(f, "postgres", cdc.Ops...),
		slotLagBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_slot_lag_bytes",
			Help: "WAL the slot holds: pg_current_wal_lsn() - confirmed_flush_lsn, polled on a normal connection.",
		}),
		confirmedLSN: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_confirmed_lsn",
			Help: "The LSN last confirmed to the server (as a number).",
		}),
		role: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_role",
			Help: "1 for this instance's role: active (holds the slot's lock) or standby (waits for it).",
		}, []string{"role"}),
		snapRows: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_postgres_snapshot_rows_total",
			Help: "Rows snapshots delivered as read events (accepted by the sink), by table.",
		}, []string{"table"}),
		snapTablesInProgress: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_snapshot_tables_in_progress",
			Help: "Tables a snapshot is reading now.",
		}),
		snapRunning: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_snapshot_running",
			Help: "1 while a snapshot has tables left to read.",
		}),
		slotLost: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_postgres_slot_lost_total",
			Help: "Times the slot was found gone or invalidated after streaming from it, by the action taken (fail, resnapshot, continue).",
		}, []string{"action"}),
		reconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_postgres_reconnects_total",
			Help: "Replication sessions restarted after an error.",
		}),
		statusUpdates: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_postgres_status_updates_total",
			Help: "Standby status updates sent.",
		}),
		pubChanges: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_postgres_publication_changes_total",
			Help: "Tables added to or moved between the bridge's publications, by publication kind (main, insert_only).",
		}, []string{"publication"}),
		skippedTables: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_tables_without_identity",
			Help: "Published tables without a usable replica identity (inserts only).",
		}),
		serverInfo: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_server_info",
			Help: "1 for the server the source reads from: system identifier, timeline and major version. A failover keeps the system identifier and starts a new timeline.",
		}, []string{"system_id", "timeline", "version"}),
		timeline: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_timeline",
			Help: "The server's timeline (IDENTIFY_SYSTEM); it changes when a standby is promoted.",
		}),
		failoverSlot: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_postgres_failover_slot",
			Help: "1 when the slot is a failover slot (PostgreSQL 17+) that standbys keep a copy of.",
		}),
	}
	m.role.WithLabelValues("active")
	m.role.WithLabelValues("standby")
	m.slotLost.WithLabelValues(OnSlotLostFail)
	m.slotLost.WithLabelValues(OnSlotLostResnapshot)
	m.slotLost.WithLabelValues(OnSlotLostContinue)
	return m
}

func (m *metrics) setRole(role string) {
	for _, r := range []string{"active", "standby"} {
		v := 0.0
		if r == role {
			v = 1
		}
		m.role.WithLabelValues(r).Set(v)
	}
}

// setServer shows the server of the current session (only that one).
func (m *metrics) setServer(sysID string, timeline int32, version int) {
	m.serverInfo.Reset()
	m.serverInfo.WithLabelValues(sysID, strconv.Itoa(int(timeline)), strconv.Itoa(version/10000)).Set(1)
	m.timeline.Set(float64(timeline))
}
