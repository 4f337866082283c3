package main

import (
	"context"

	pgsource "github.com/cdcbridge/cdcbridge/sources/postgres"
)

func checkPostgres(ctx context.Context, cfg *Config) []checkResult {
	var out []checkResult
	for _, r := range pgsource.Check(ctx, cfg.Postgres) {
		out = append(out, checkResult{Name: "postgres " + r.Name, Status: r.Status, Detail: redactError(r.Detail, cfg.Postgres.URL), Fix: r.Fix})
	}
	return out
}
