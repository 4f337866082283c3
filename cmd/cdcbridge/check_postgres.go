package main

import (
	"context"
	"fmt"
	"strings"

	pgsource "github.com/cdcbridge/cdcbridge/sources/postgres"
)

func checkPostgres(ctx context.Context, cfg *Config) []checkResult {
	var out []checkResult
	for _, r := range pgsource.Check(ctx, cfg.Postgres) {
		out = append(out, checkResult{Name: "postgres " + r.Name, Status: r.Status, Detail: redactError(r.Detail, cfg.Postgres.URL), Fix: r.Fix})
	}
	return append(out, checkPostgresSnapshots(ctx, cfg))
}

// checkPostgresSnapshots lists the snapshots in progress, as the bridge
// last saved them.
func checkPostgresSnapshots(ctx context.Context, cfg *Config) checkResult {
	const name = "postgres snapshots"
	awsCfg, err := loadAWSConfig(ctx)
	if err != nil {
		return warn(name, "", "cannot read the checkpoint store: %v", err)
	}
	store, _, err := openStore(ctx, cfg, awsCfg, true)
	if err != nil {
		return warn(name, "", "cannot read the checkpoint store: %v", err)
	}
	defer store.Close()
	infos, err := pgsource.Snapshots(ctx, cfg.Postgres, store)
	if err != nil {
		return warn(name, "", "%s", redactError(err.Error(), cfg.Postgres.URL))
	}
	var running, refused []string
	for _, s := range infos {
		for _, t := range s.Tables {
			switch {
			case t.State == "refused" || t.State == "failed":
				refused = append(refused, fmt.Sprintf("%s %s %s: %s", s.ID, t.Table, t.State, t.Note))
			case s.Finished == "" && (t.State == "reading" || t.State == "pending"):
				running = append(running, fmt.Sprintf("%s %s %s (%d rows)", s.ID, t.Table, t.State, t.Rows))
			}
		}
	}
	if len(refused) > 0 {
		return warn(name, "give the tables a primary key (or fix the condition) and ask again with cdcbridge snapshot",
			"%s", strings.Join(append(refused, running...), "; "))
	}
	if len(running) == 0 {
		return ok(name, "none in progress")
	}
	return ok(name, "in progress: %s", strings.Join(running, "; "))
}
