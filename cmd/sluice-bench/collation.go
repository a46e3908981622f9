package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// The tables of the collation phase: the same rows, keyed by text in
// collation C, which the primary key orders as backfill reads chunks, and
// in en-x-icu, which it does not.
const (
	collationC        = "public.coll_c"
	collationICU      = "public.coll_icu"
	collationICUIndex = "coll_icu_sluice_c" // the name sluice check gives its index
	// collationRounds is how many times each table with an index is
	// backfilled; the median counts. Even, so that the flipping order
	// puts both tables at the same mean position.
	collationRounds = 4
)

// collationKeySQL is a row's key: md5 in letters of both cases and
// digits, so that C (uppercase before lowercase) and en-x-icu (case
// ignored at first) order the rows apart.
const collationKeySQL = `translate(md5(g::text), '0123456789abcdef', 'aB3dEf6hIj0LmN9p')`

// collationCliff measures what an index in collation C saves a backfill
// of a table keyed by text in another collation: without one, every chunk
// sorts the rest of the table (the collation cliff). It fills coll_c and
// coll_icu with the same --collation-rows rows, indexes coll_icu as
// `sluice check` advises (the statement its warning prints), has sluice
// capture both, and times backfills of each through the running sluice
// from the request until the job is done, the median of collationRounds; then
// drops the index and times coll_icu once more.
//
// The rows are written while sluice is stopped and before the tables are
// published, so they never become events; the walsender still decodes
// them when sluice starts, and the timing waits until it has.
func (r *run) collationCliff(ctx context.Context, pg *pgBench, res *result) error {
	n := r.o.collationRows
	payload := payloadSQL(r.o.rowBytes - 8)
	for _, sql := range []string{
		`CREATE TABLE coll_c (id text COLLATE "C" PRIMARY KEY, payload text NOT NULL)`,
		`CREATE TABLE coll_icu (id text COLLATE "en-x-icu" PRIMARY KEY, payload text NOT NULL)`,
		// Both heaps in the same row order.
		fmt.Sprintf("INSERT INTO coll_c SELECT %s, %s FROM generate_series(1, %d) g", collationKeySQL, payload, n),
		"INSERT INTO coll_icu SELECT * FROM coll_c",
	} {
		if _, err := pg.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("collation phase (%s): %w", sql, err)
		}
	}
	if err := r.captureAlso(collationC, collationICU); err != nil {
		return err
	}
	create, err := r.checkAdvice(ctx, collationICU, collationC)
	if err != nil {
		return err
	}
	if !strings.Contains(create, `"`+collationICUIndex+`"`) {
		return fmt.Errorf("sluice check advised %s, want an index named %s", create, collationICUIndex)
	}
	res.CollationIndex = create
	for _, sql := range []string{create, "VACUUM ANALYZE coll_c", "VACUUM ANALYZE coll_icu", "CHECKPOINT"} {
		if _, err := pg.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("collation phase (%s): %w", sql, err)
		}
	}
	written, err := pg.walEnd(ctx)
	if err != nil {
		return err
	}

	p, nc, _, err := r.start(ctx, "")
	if err != nil {
		return err
	}
	defer nc.Close()
	defer p.stop()
	if err := pg.waitDecoded(ctx, written, p); err != nil {
		return err
	}
	want := int64(n)
	// Each table counts its median round: single runs of the same
	// backfill moved by up to 2.5x on a 2-core machine shared with other
	// work (the first after sluice starts most), more than the difference
	// measured. And the order told: with C timed first in every round,
	// en-x-icu came out 4-32% slower, and up to 8% faster the other way
	// round. So the order flips every round, C en-x-icu en-x-icu C ...,
	// which gives both tables the same mean position.
	tables := []struct {
		table string
		runs  *[]float64
	}{{collationC, &res.CollationCRuns}, {collationICU, &res.CollationICURuns}}
	for range collationRounds {
		for _, c := range tables {
			_, took, err := timeBackfill(ctx, nc, p, c.table, want)
			if err != nil {
				return err
			}
			*c.runs = append(*c.runs, took.Seconds())
		}
		slices.Reverse(tables)
	}
	res.CollationCSeconds = median(res.CollationCRuns)
	res.CollationICUSeconds = median(res.CollationICURuns)
	if _, err := pg.conn.Exec(ctx, "DROP INDEX "+collationICUIndex); err != nil {
		return fmt.Errorf("drop the advised index: %w", err)
	}
	_, took, err := timeBackfill(ctx, nc, p, collationICU, want)
	if err != nil {
		return err
	}
	res.CollationICUNoIndexSeconds = took.Seconds()
	if err := p.stop(); err != nil {
		return err
	}
	res.CollationRows = n
	// The backfill without the index warned about it, with the same
	// statement, and the one of coll_c did not.
	warned, other, err := backfillWarnings(r.logPath(), collationICU, collationC)
	if err != nil {
		return err
	}
	if warned == 0 || other > 0 {
		return fmt.Errorf("sluice warned %d times about the backfill of %s without its index (want at least 1) and %d times about %s (want 0): see %s",
			warned, collationICU, other, collationC, r.logPath())
	}
	return nil
}

// captureAlso adds tables to the source.tables of sluice's config, for
// its next start.
func (r *run) captureAlso(tables ...string) error {
	b, err := os.ReadFile(r.config)
	if err != nil {
		return err
	}
	old := "tables: [" + r.db.table() + "]"
	if !bytes.Contains(b, []byte(old)) {
		return fmt.Errorf("sluice's config %s has no %q", r.config, old)
	}
	now := "tables: [" + strings.Join(append([]string{r.db.table()}, tables...), ", ") + "]"
	return os.WriteFile(r.config, bytes.Replace(b, []byte(old), []byte(now), 1), 0o600)
}

// checkAdvice runs `sluice check` on the config and returns the statement
// its warning about table advises; it must advise nothing for none.
func (r *run) checkAdvice(ctx context.Context, table, none string) (string, error) {
	cmd := exec.CommandContext(ctx, r.o.sluiceBin, "check", "--config", r.config)
	if r.storeKey != "" {
		cmd.Env = append(os.Environ(), storeKeyEnv+"="+r.storeKey)
	}
	out, err := cmd.CombinedOutput()
	var advice string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "WARN  table "+table+": "):
			// The statement ends the line.
			advice = line[strings.LastIndex(line, ": ")+2:]
		case strings.HasPrefix(line, "WARN  table "+none+": "):
			return "", fmt.Errorf("sluice check warns about %s, keyed by text in collation C:\n%s", none, out)
		}
	}
	if advice == "" {
		return "", fmt.Errorf("sluice check (%v) advises no index for %s:\n%s", err, table, out)
	}
	return advice, nil
}

// backfillWarnings counts the lines of sluice's log that warn that a
// backfill of table, and of other, sorts for every chunk.
func backfillWarnings(logPath, table, other string) (warned, otherWarned int, err error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "backfill sorts the rest of the table for every chunk") {
			continue
		}
		switch {
		case strings.Contains(line, "table="+table+" "):
			warned++
		case strings.Contains(line, "table="+other+" "):
			otherWarned++
		}
	}
	return warned, otherWarned, nil
}
