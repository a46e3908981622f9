package postgres

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// insertMessage builds the pgoutput bytes of an Insert with text values.
func insertMessage(relID uint32, values ...string) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, relID)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(values)))
	for _, v := range values {
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

// BenchmarkDecodeEncodePartition is the per-event hot path: parse the
// pgoutput message, decode the row, partition the key, encode the event.
func BenchmarkDecodeEncodePartition(b *testing.B) {
	oids := []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.NumericOID, pgtype.TextOID, pgtype.TimestamptzOID, pgtype.JSONBOID}
	rel := &relation{identity: make([]bool, len(oids))}
	for _, oid := range oids {
		dec, err := newDecoder(oid, nil)
		if err != nil {
			b.Fatal(err)
		}
		rel.decoders = append(rel.decoders, dec)
	}
	rel.table = &sources.Table{Schema: "public", Name: "orders", Version: 1, Key: []int{0},
		Columns: []string{"id", "customer", "amount", "status", "created_at", "attrs"}}
	msg := insertMessage(16384, "123456", "customer-42", "19.90", "paid", "2024-02-29 11:45:06.123456+00", `{"gift": true}`)
	enc := sink.NewEncoder("pg1", "postgres", "shop")
	var buf, key []byte
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m, err := pglogrepl.Parse(msg)
		if err != nil {
			b.Fatal(err)
		}
		after, err := rel.decode(m.(*pglogrepl.InsertMessage).Tuple, nil, false)
		if err != nil {
			b.Fatal(err)
		}
		c := sources.Change{Op: sources.OpCreate, Table: rel.table, After: after, Pos: "0/16B3748", TxID: 771, CommitTime: now}
		key = sink.AppendCanonicalKey(key[:0], c.KeyValues())
		_ = sink.Partition(key, 8)
		buf = enc.AppendEvent(buf[:0], &c, now)
	}
	b.SetBytes(int64(len(msg)))
}
