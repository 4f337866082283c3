package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Publications.
//
// A publication that exists is used as it is. When the bridge creates one
// it must never make the user's own writes fail: PostgreSQL rejects UPDATE
// and DELETE on a table without a replica identity once the table is in a
// publication that publishes them. So the bridge keeps two publications:
//
//   - the main one (CDCBRIDGE_POSTGRES_PUBLICATION), FOR TABLE with every
//     chosen table that has a primary key or another replica identity;
//   - a companion, <name>_insert_only, WITH (publish = 'insert, truncate'),
//     for the tables without one, each named in a warning with the fix.
//
// pgoutput streams the union of both. Tables created later must be
// covered too; FOR ALL TABLES on the main publication would break writes
// to every future table created without a key, so instead a periodic sync
// adds new tables to the right publication and moves tables whose replica
// identity changed. When the bridge's role is a superuser (the only role
// PostgreSQL lets create FOR ALL TABLES), the companion is FOR ALL TABLES
// insert-only, which is always safe and captures inserts into a new table
// from its creation, before the sync adds it to the main publication.
//
// The main publication's comment marks it as the bridge's and records the
// table selection, so any instance knows to keep it in sync.

// insertOnlySuffix names the companion publication.
const insertOnlySuffix = "_insert_only"

const managedMarker = "cdcbridge:managed"

// pubTable is a table that could be published.
type pubTable struct {
	oid      uint32
	schema   string
	name     string
	identity bool // has a usable replica identity
	owned    bool // the bridge's role may add it to a publication
}

func (t pubTable) qualified() string { return quoteIdent(t.schema) + "." + quoteIdent(t.name) }
func (t pubTable) String() string    { return t.schema + "." + t.name }

// candidateTables lists the tables the bridge would publish: tables (as
// schema.table), or every permanent ordinary or partitioned table
// (partitions are covered by their root) outside the system schemas.
func candidateTables(ctx context.Context, q catalogQuerier, tables []string) ([]pubTable, error) {
	rows, err := q.Query(ctx, `SELECT c.oid::int8, n.nspname::text, c.relname::text,
			CASE c.relreplident
				WHEN 'f' THEN true
				WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
				WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
				ELSE false END,
			pg_has_role(c.relowner, 'USAGE'), c.relispartition
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		ORDER BY n.nspname, c.relname`)
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	defer rows.Close()
	var want map[string]bool
	if len(tables) > 0 {
		want = make(map[string]bool)
		for _, t := range tables {
			schema, name, _ := splitTableName(t)
			want[schema+"."+name] = true
		}
	}
	var out []pubTable
	for rows.Next() {
		var t pubTable
		var oid int64
		var partition bool
		if err := rows.Scan(&oid, &t.schema, &t.name, &t.identity, &t.owned, &partition); err != nil {
			return nil, fmt.Errorf("listing tables: %w", err)
		}
		t.oid = uint32(oid)
		if want != nil {
			if !want[t.String()] {
				continue
			}
		} else if partition {
			continue
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

type pubInfo struct {
	name      string
	allTables bool
	update    bool // publishes update or delete
	comment   string
}

func lookupPublications(ctx context.Context, q catalogQuerier, names []string) (map[string]pubInfo, error) {
	rows, err := q.Query(ctx, `SELECT pubname::text, puballtables, pubupdate OR pubdelete,
			coalesce(obj_description(oid, 'pg_publication'), '')
		FROM pg_catalog.pg_publication WHERE pubname = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("looking up publications: %w", err)
	}
	defer rows.Close()
	out := map[string]pubInfo{}
	for rows.Next() {
		var p pubInfo
		if err := rows.Scan(&p.name, &p.allTables, &p.update, &p.comment); err != nil {
			return nil, fmt.Errorf("looking up publications: %w", err)
		}
		out[p.name] = p
	}
	return out, rows.Err()
}

// ensurePublication returns the publications to stream and whether the
// bridge manages (and so keeps syncing) them.
func (s *Source) ensurePublication(ctx context.Context, pool *pgxpool.Pool) ([]string, bool, error) {
	main, companion := s.cfg.Publication, s.cfg.Publication+insertOnlySuffix
	pubs, err := lookupPublications(ctx, pool, []string{main, companion})
	if err != nil {
		return nil, false, err
	}
	if p, ok := pubs[main]; ok {
		names := []string{main}
		if _, ok := pubs[companion]; ok {
			names = append(names, companion)
		}
		managed := strings.HasPrefix(p.comment, managedMarker)
		if !managed {
			if len(s.cfg.Tables) > 0 {
				s.log.Warn("the publication exists and is used as it is: CDCBRIDGE_POSTGRES_TABLES only applies to a publication the bridge creates", "publication", main)
			}
			s.warnUnsafePublication(ctx, pool, p)
		}
		return names, managed, nil
	}
	if err := s.createPublications(ctx, pool, main, companion); err != nil {
		return nil, false, err
	}
	return []string{main, companion}, true, nil
}

// warnUnsafePublication names the tables of a user's publication whose
// UPDATE and DELETE PostgreSQL rejects for lack of a replica identity.
func (s *Source) warnUnsafePublication(ctx context.Context, pool *pgxpool.Pool, p pubInfo) {
	if !p.update {
		return
	}
	rows, err := pool.Query(ctx, `SELECT DISTINCT pt.schemaname || '.' || pt.tablename
		FROM pg_catalog.pg_publication_tables pt
		JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1 AND (c.relreplident = 'n'
		   OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))`, p.name)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, n := range names {
		s.log.Warn("a table in the publication has no replica identity: PostgreSQL rejects its UPDATE and DELETE statements",
			"publication", p.name, "table", n,
			"fix", fmt.Sprintf("add a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL", n))
	}
}

// createPublications creates the main and companion publications in one
// transaction.
func (s *Source) createPublications(ctx context.Context, pool *pgxpool.Pool, main, companion string) error {
	srv, err := inspectServer(ctx, pool)
	if err != nil {
		return err
	}
	tables, err := candidateTables(ctx, pool, s.cfg.Tables)
	if err != nil {
		return err
	}
	var canCreate bool
	if err := pool.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&canCreate); err != nil {
		return fmt.Errorf("checking the CREATE privilege: %w", err)
	}
	if !canCreate {
		return fatal(fmt.Errorf("creating publication %s needs the CREATE privilege on database %s: GRANT CREATE ON DATABASE %s TO %s, or create the publication yourself",
			main, srv.database, quoteIdent(srv.database), quoteIdent(srv.user)))
	}
	if len(s.cfg.Tables) > 0 {
		for _, want := range s.cfg.Tables {
			schema, name, _ := splitTableName(want)
			if !slices.ContainsFunc(tables, func(t pubTable) bool { return t.schema == schema && t.name == name }) {
				s.log.Warn("a configured table does not exist (yet); it is published once it is created", "table", schema+"."+name)
			}
		}
	}
	var notOwned []string
	var withID, withoutID []pubTable
	for _, t := range tables {
		if !t.owned {
			notOwned = append(notOwned, t.String())
			continue
		}
		if t.identity {
			withID = append(withID, t)
		} else {
			withoutID = append(withoutID, t)
		}
	}
	if len(notOwned) > 0 {
		return fatal(fmt.Errorf("creating publication %s FOR TABLE needs ownership of each table; role %s does not own %s. "+
			"Fix: ALTER TABLE ... OWNER TO %s, or have the owner create publication %s (and %s) with these tables; "+
			"or narrow CDCBRIDGE_POSTGRES_TABLES", main, srv.user, strings.Join(notOwned, ", "), quoteIdent(srv.user), main, companion))
	}
	for _, t := range withoutID {
		s.warnNoIdentity(t)
	}
	opts := ", publish_via_partition_root = true"
	if srv.version >= 180000 {
		// Stored generated columns are part of the row as to_jsonb sees
		// it; pgoutput sends them from 18 on when asked to.
		opts += ", publish_generated_columns = stored"
	}
	allTablesCompanion := srv.superuser && len(s.cfg.Tables) == 0
	var stmts []string
	stmts = append(stmts, "CREATE PUBLICATION "+quoteIdent(main)+forTables(withID)+" WITH (publish = 'insert, update, delete, truncate'"+opts+")")
	if allTablesCompanion {
		stmts = append(stmts, "CREATE PUBLICATION "+quoteIdent(companion)+" FOR ALL TABLES WITH (publish = 'insert, truncate'"+opts+")")
	} else {
		stmts = append(stmts, "CREATE PUBLICATION "+quoteIdent(companion)+forTables(withoutID)+" WITH (publish = 'insert, truncate'"+opts+")")
	}
	selection := "all"
	if len(s.cfg.Tables) > 0 {
		selection = strings.Join(s.cfg.Tables, ",")
	}
	stmts = append(stmts, "COMMENT ON PUBLICATION "+quoteIdent(main)+" IS "+quoteLiteral(managedMarker+" tables="+selection))
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return explainPublicationError(err, q, srv)
			}
		}
		return nil
	}); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // another instance created it meanwhile
			return nil
		}
		return err
	}
	s.log.Info("created publications", "publication", main, "tables", len(withID), "insert_only_publication", companion,
		"insert_only_tables", len(withoutID), "insert_only_for_all_tables", allTablesCompanion)
	s.m.skippedTables.Set(float64(len(withoutID)))
	return nil
}

func forTables(ts []pubTable) string {
	if len(ts) == 0 {
		return ""
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.qualified()
	}
	return " FOR TABLE " + strings.Join(names, ", ")
}

func (s *Source) warnNoIdentity(t pubTable) {
	s.log.Warn("table has no primary key or replica identity: publishing its inserts and truncates only, so its UPDATE and DELETE keep working",
		"table", t.String(),
		"fix", fmt.Sprintf("add a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL (the bridge then publishes its updates and deletes)", t.qualified()))
}

func explainPublicationError(err error, stmt string, srv *serverInfo) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	if pgErr.Code == "42501" { // insufficient_privilege
		if strings.Contains(stmt, "ALL TABLES") {
			return fatal(fmt.Errorf("%s: %w; FOR ALL TABLES needs a superuser", stmt, err))
		}
		return fatal(fmt.Errorf("%s: %w; FOR TABLE needs ownership of each table (role %s)", stmt, err, srv.user))
	}
	return fmt.Errorf("%s: %w", stmt, err)
}

// syncPublications keeps the bridge's publications up to date with the
// tables that exist now: new tables join, tables whose replica identity
// appeared or vanished move between the main and the insert-only
// publication (in one transaction, so no change falls between them).
func (s *Source) syncPublications(ctx context.Context, pool *pgxpool.Pool) {
	warned := map[string]bool{}
	t := time.NewTicker(s.cfg.PublicationSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if err := s.syncOnce(ctx, pool, warned); err != nil && ctx.Err() == nil {
			s.log.Warn("syncing the publications with new tables", "err", err)
		}
	}
}

func (s *Source) syncOnce(ctx context.Context, pool *pgxpool.Pool, warned map[string]bool) error {
	main, companion := s.cfg.Publication, s.cfg.Publication+insertOnlySuffix
	pubs, err := lookupPublications(ctx, pool, []string{main, companion})
	if err != nil {
		return err
	}
	if _, ok := pubs[main]; !ok {
		return fmt.Errorf("publication %s no longer exists", main)
	}
	comp, hasComp := pubs[companion]
	tables, err := candidateTables(ctx, pool, s.cfg.Tables)
	if err != nil {
		return err
	}
	members, err := publicationMembers(ctx, pool, []string{main, companion})
	if err != nil {
		return err
	}
	var stmts []string
	var noIdentity int
	for _, t := range tables {
		if !t.identity {
			noIdentity++
		}
		inMain, inComp := members[main][t.oid], members[companion][t.oid]
		wantMain := t.identity
		wantComp := hasComp && !comp.allTables && !t.identity
		if inMain == wantMain && inComp == wantComp {
			continue
		}
		if !t.owned {
			if !warned["owner:"+t.String()] {
				warned["owner:"+t.String()] = true
				s.log.Warn("a table cannot be published: the bridge's role does not own it",
					"table", t.String(), "fix", fmt.Sprintf("ALTER TABLE %s OWNER TO the bridge's role, or have the owner run ALTER PUBLICATION %s ADD TABLE %s", t.qualified(), main, t.qualified()))
			}
			continue
		}
		alter := func(pub, verb, kind string) {
			stmts = append(stmts, "ALTER PUBLICATION "+quoteIdent(pub)+" "+verb+" TABLE "+t.qualified())
			s.m.pubChanges.WithLabelValues(kind).Inc()
			s.log.Info("publication change", "publication", pub, "change", strings.ToLower(verb), "table", t.String())
		}
		switch {
		case wantMain && !inMain:
			alter(main, "ADD", "main")
		case !wantMain && inMain:
			// Its key is gone, and PostgreSQL rejects its updates and
			// deletes until it leaves the main publication.
			alter(main, "DROP", "main")
		}
		switch {
		case wantComp && !inComp:
			alter(companion, "ADD", "insert_only")
		case !wantComp && inComp:
			alter(companion, "DROP", "insert_only")
		}
		if !t.identity && !warned["id:"+t.String()] {
			warned["id:"+t.String()] = true
			s.warnNoIdentity(t)
		}
	}
	s.m.skippedTables.Set(float64(noIdentity))
	if len(stmts) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
}

// publicationMembers returns the tables named directly in each publication.
func publicationMembers(ctx context.Context, q catalogQuerier, pubs []string) (map[string]map[uint32]bool, error) {
	rows, err := q.Query(ctx, `SELECT p.pubname::text, r.prrelid::int8
		FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_publication_rel r ON r.prpubid = p.oid
		WHERE p.pubname = ANY($1)`, pubs)
	if err != nil {
		return nil, fmt.Errorf("listing publication members: %w", err)
	}
	defer rows.Close()
	out := map[string]map[uint32]bool{}
	for _, p := range pubs {
		out[p] = map[uint32]bool{}
	}
	for rows.Next() {
		var p string
		var oid int64
		if err := rows.Scan(&p, &oid); err != nil {
			return nil, err
		}
		out[p][uint32(oid)] = true
	}
	return out, rows.Err()
}
