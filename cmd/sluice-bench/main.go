// Command sluice-bench measures sluice on this machine against the limits
// it cannot beat: the database's own replication reader and the embedded
// JetStream server taking the same messages without any database.
//
// It starts a private PostgreSQL or MariaDB and runs the sluice binary on its
// embedded NATS, in temp dirs, then measures in one run:
//
//   - catch-up: N rows are committed while sluice is stopped; sluice then
//     reads them and publishes them. Its rate is events over the time from
//     its first stored event to its last. The database baseline
//     (pg_recvlogical on the same publication, or a bare go-mysql
//     BinlogSyncer) reads the same backlog, and the JetStream baseline
//     publishes the same number of messages of the same size with
//     Nats-Msg-Id, asynchronously. The ratio is sluice over the slower of
//     the two. Rounds (--rounds, default 3) repeat this on a new backlog
//     each, alternating sluice with its limits; the report gives each
//     round and their medians.
//   - apply (PostgreSQL only): `sluice apply` lands the backlog from the
//     stream in another database of the same PostgreSQL; its events/s is
//     set against COPY of the same rows into a table of the same shape and
//     against sluice's own catch-up.
//   - latency: rows are committed one per transaction at a fixed rate, and
//     each row's commit-to-delivery time is measured by a consumer.
//   - one big transaction: sluice's peak RSS while it publishes it.
//   - backfill (after the others but collation: its events would be applied
//     too, and the time sluice runs changes how the latency run starts): a
//     running sluice is asked to backfill the bench table, as `sluice
//     backfill` asks, and timed from the request until its job is done, in
//     rows/s against the JetStream limit measured right after it on as many
//     messages (and the one above) and, on PostgreSQL, against COPY (SELECT
//     ... ORDER BY key) TO STDOUT of the same table; with sluice's peak RSS
//     meanwhile.
//   - collation (PostgreSQL only, after the backfill): backfills of two
//     tables of the same rows, keyed by text COLLATE "C" and COLLATE
//     "en-x-icu", the latter with the index `sluice check` advises and
//     then without it: the cliff that index removes.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// options are the command line.
type options struct {
	kind        string // "pg" or "mysql"
	rows        int
	rounds      int // catch-up rounds, each on a backlog of rows rows
	rowBytes    int
	txSize      int
	partitions  int
	replicas    int
	latencyRate int
	latencyFor  time.Duration
	bigTxRows   int
	sluiceBin   string
	profileDir  string
	json        bool
	// apply measures `sluice apply` and COPY after the catch-up (pg only).
	apply bool
	// backfill measures a backfill of the bench table after the catch-up.
	backfill bool
	// collationRows are the rows of each table of the collation phase
	// (pg only); 0 skips it.
	collationRows int
	// storeCipher, when set, encrypts sluice's store at rest with it.
	storeCipher string
}

func main() {
	var o options
	cmd := &cobra.Command{
		Use:   "sluice-bench pg|mysql",
		Short: "Measure sluice's throughput, latency and memory against the database's and JetStream's own limits",
		Long: `sluice-bench starts a private database and the sluice binary on its embedded
NATS, in temp dirs, and reports in one run:
  - catch-up events/s of sluice over a backlog of --rows rows, against the same
    backlog read by pg_recvlogical (pg) or a bare go-mysql BinlogSyncer (mysql),
    and against the embedded JetStream taking as many messages of the same size
    (async publish with Nats-Msg-Id); the ratio is sluice over the slower;
    --rounds of these (default 3), each on a new backlog, alternate sluice
    with its limits, and the report gives each round and their medians;
  - pg only: events/s of sluice apply landing that backlog from the stream in
    another database of the same PostgreSQL (--create, from the stream's start),
    against COPY of the same rows into a table of the same shape and against
    sluice's catch-up; --apply=false skips it (mysql never measures it: its
    target would need a PostgreSQL started as well);
  - p50/p99 commit-to-delivery latency at --latency-rate rows/s;
  - sluice's peak RSS while it publishes one transaction of --big-tx rows;
  - then rows/s of a backfill of the bench table (every row the run wrote)
    requested from the running sluice as sluice backfill does, from the request
    until the job is done, against the JetStream limit measured right after it
    on as many messages (and the one above) and (pg) against
    COPY (SELECT * FROM bench ORDER BY id) TO STDOUT of the table, and sluice's
    peak RSS meanwhile; --backfill=false skips it;
  - pg only, after that: seconds to backfill --collation-rows rows keyed by text
    COLLATE "C", by text COLLATE "en-x-icu" with the index sluice check advises,
    and by the latter without it (every chunk then sorts the rest of the
    table); --collation-rows 0 skips it.`,
		Example: `  sluice-bench pg
  sluice-bench mysql --rows 200000 --json`,
		Args:          cobra.ExactArgs(1),
		ValidArgs:     []string{"pg", "mysql"},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.kind = args[0]
			if err := o.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			r, err := bench(ctx, o)
			if err != nil {
				return err
			}
			if o.json {
				return r.writeJSON(os.Stdout)
			}
			r.writeText(os.Stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.rows, "rows", 1_000_000, "rows in the catch-up backlog, one insert event each")
	f.IntVar(&o.rounds, "rounds", 3, "catch-up rounds, alternating sluice and its limits, each on a new backlog of --rows rows; the report gives their medians")
	f.IntVar(&o.rowBytes, "row-bytes", 100, "bytes per row (an 8-byte id and a text payload)")
	f.IntVar(&o.txSize, "tx-size", 100, "rows per transaction in the backlog")
	f.IntVar(&o.partitions, "partitions", 8, "partitions of sluice's stream")
	f.IntVar(&o.replicas, "replicas", 1, "stream replicas: 3 runs sluice's embedded NATS in a cluster with two more nodes")
	f.IntVar(&o.latencyRate, "latency-rate", 2000, "rows/s, one per transaction, while latency is measured")
	f.DurationVar(&o.latencyFor, "latency-for", 10*time.Second, "how long latency is measured")
	f.IntVar(&o.bigTxRows, "big-tx", 1_000_000, "rows of the single transaction during which peak RSS is measured (0 skips it)")
	f.StringVar(&o.sluiceBin, "sluice", "", "the sluice binary (default: sluice next to sluice-bench, then bin/sluice, then $PATH)")
	f.StringVar(&o.profileDir, "profile", "", "write sluice's CPU and heap profiles of the catch-up, the big transaction and the backfill to this dir (go tool pprof)")
	f.BoolVar(&o.json, "json", false, "print one JSON object instead of the table")
	f.BoolVar(&o.backfill, "backfill", true, "measure a backfill of the bench table through the running sluice, against JetStream's limit and (pg) COPY of the table")
	f.BoolVar(&o.apply, "apply", true, "pg: measure sluice apply of the backlog into PostgreSQL against COPY (mysql: not measured)")
	f.IntVar(&o.collationRows, "collation-rows", 200_000, "pg: rows of each table of the collation phase, backfilled keyed by text COLLATE \"C\" and \"en-x-icu\" (0 skips it)")
	f.StringVar(&o.storeCipher, "store-encryption", "", "encrypt sluice's store at rest with this cipher (chacha or aes), to measure what it costs")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(1)
	}
}

func (o *options) validate() error {
	switch {
	case o.kind != "pg" && o.kind != "mysql":
		return fmt.Errorf("unknown database %q: use pg or mysql", o.kind)
	case o.rows < 1:
		return fmt.Errorf("--rows %d: use at least 1", o.rows)
	case o.rounds < 1:
		return fmt.Errorf("--rounds %d: use at least 1", o.rounds)
	case o.rowBytes < 9:
		return fmt.Errorf("--row-bytes %d: use at least 9 (the id takes 8)", o.rowBytes)
	case o.txSize < 1:
		return fmt.Errorf("--tx-size %d: use at least 1", o.txSize)
	case o.partitions < 1:
		return fmt.Errorf("--partitions %d: use at least 1", o.partitions)
	case o.replicas != 1 && o.replicas != 3:
		return fmt.Errorf("--replicas %d: use 1 or 3", o.replicas)
	case o.latencyRate < 1 || o.latencyFor <= 0:
		return fmt.Errorf("--latency-rate and --latency-for must be positive")
	case o.storeCipher != "" && o.storeCipher != "chacha" && o.storeCipher != "aes":
		return fmt.Errorf("--store-encryption %q: use chacha or aes", o.storeCipher)
	case o.bigTxRows < 0:
		return fmt.Errorf("--big-tx %d: use 0 to skip, or a row count", o.bigTxRows)
	case o.collationRows < 0:
		return fmt.Errorf("--collation-rows %d: use 0 to skip, or a row count", o.collationRows)
	}
	bin, err := findSluice(o.sluiceBin)
	if err != nil {
		return err
	}
	o.sluiceBin = bin
	return nil
}
