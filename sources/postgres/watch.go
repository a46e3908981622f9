package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources"
)

// watchInterval is the longest a table created while sluice runs waits
// to be captured.
const watchInterval = 10 * time.Second

// captured looks up a captured table, the signal table included.
func (s *Source) captured(qn string) (tableInfo, bool) {
	s.tablesMu.RLock()
	defer s.tablesMu.RUnlock()
	t, ok := s.tables[qn]
	return t, ok
}

func (s *Source) setCaptured(t tableInfo, on bool) {
	s.tablesMu.Lock()
	if on {
		s.tables[t.qualified()] = t
	} else {
		delete(s.tables, t.qualified())
	}
	s.tablesMu.Unlock()
	s.tablesGen.Add(1)
}

// watchTables captures the tables that a pattern of source.tables
// matches once they are created, and stops capturing dropped ones, until
// ctx ends. Without patterns the captured tables are fixed at start.
func (s *Source) watchTables(ctx context.Context) {
	if !s.set.HasPatterns() {
		return
	}
	t := time.NewTicker(min(s.cfg.Heartbeat, watchInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.syncTables(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("cannot look for tables created or dropped: tried again shortly", "error", valueFree(err))
		}
	}
}

// syncTables compares the captured tables with the catalog once.
func (s *Source) syncTables(ctx context.Context) error {
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		return err
	}
	names, err := userTables(ctx, conn)
	if err != nil {
		return s.dropBackfillConnLocked(err)
	}
	present := make(map[string]bool, len(names))
	for _, qn := range names {
		present[qn] = true
	}
	for _, qn := range s.Tables() {
		if present[qn] {
			continue
		}
		schema, name, _ := strings.Cut(qn, ".")
		info, _, found, err := readTable(ctx, conn, s.cfg, schema, name)
		if err != nil {
			return s.dropBackfillConnLocked(err)
		}
		if !found { // not a partition userTables leaves out: gone
			info.schema, info.name = schema, name
			s.setCaptured(info, false)
			s.cfg.Log.Warn("table dropped: no longer captured", "table", qn)
		}
	}
	for _, qn := range names {
		if s.set.Unfit(qn) && !s.unfitWarned[qn] {
			s.unfitWarned[qn] = true // syncTables runs under backfillMu
			s.cfg.Log.Warn(sources.UnfitWarning, "table", qn)
		}
		if qn == s.signal.qualified() || !s.set.Matches(qn) {
			continue
		}
		if _, ok := s.captured(qn); ok {
			continue
		}
		if err := s.join(ctx, conn, qn); err != nil {
			if ctx.Err() != nil {
				return err
			}
			if !s.warned[qn] {
				s.warned[qn] = true
				s.cfg.Log.Warn("a table that source.tables matches is not captured", "table", qn, "why", valueFree(err).Error())
			}
		}
	}
	return nil
}

// join starts capturing table qn: it is captured before it is published,
// so that the stream never decodes its first changes as another table's.
func (s *Source) join(ctx context.Context, conn *pgx.Conn, qn string) error {
	schema, name, _ := strings.Cut(qn, ".")
	info, k, found, err := readTable(ctx, conn, s.cfg, schema, name)
	switch {
	case err != nil:
		return err
	case !found:
		return nil // dropped again already
	case k.columns == nil && k.problem != "":
		return fmt.Errorf("%s", k.problem)
	case k.columns == nil:
		return fmt.Errorf("table %s has no usable key: add a primary key, or a unique index over NOT NULL columns as the replica identity (REPLICA IDENTITY USING INDEX)", qn)
	}
	s.setCaptured(info, true)
	if err := publish(ctx, conn, s.cfg.Publication, info); err != nil {
		s.setCaptured(info, false)
		return err
	}
	delete(s.warned, qn)
	s.cfg.Log.Info("table created: captured", "table", qn, "key", strings.Join(info.key, ","), "publication", s.cfg.Publication)
	if s.cfg.OnTableAdded != nil {
		s.cfg.OnTableAdded(qn)
	}
	return nil
}

// publish adds a table to the publication, unless it is FOR ALL TABLES or
// has it already.
func publish(ctx context.Context, conn *pgx.Conn, pub string, t tableInfo) error {
	var all, member bool
	err := conn.QueryRow(ctx, `SELECT p.puballtables, EXISTS (SELECT 1 FROM pg_publication_tables pt
			WHERE pt.pubname = p.pubname AND pt.schemaname = $2 AND pt.tablename = $3)
		FROM pg_publication p WHERE p.pubname = $1`, pub, t.schema, t.name).Scan(&all, &member)
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", pub, err)
	}
	if all || member {
		return nil
	}
	sql := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pgx.Identifier{pub}.Sanitize(), pgx.Identifier{t.schema, t.name}.Sanitize())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("add %s to publication %s: %w (the login must own the table and the publication: create the table as sluice's user, or run %s as the owner, or use a publication FOR ALL TABLES; sluice check says which is missing)",
			t.qualified(), pub, err, sql)
	}
	return nil
}
