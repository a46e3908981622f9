package postgres

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources"
)

// stateDesc describes the SQLSTATEs the backfill paths meet most, without
// the values a server message may quote.
var stateDesc = map[string]string{
	"57014": "statement canceled (statement timeout)",
	"57P01": "the server is shutting down",
	"57P02": "the server crashed",
	"57P03": "the server is starting up",
	"42501": "permission denied",
	"42P01": "table does not exist",
	"42703": "column does not exist",
	"42883": "no such operator or function for the column's type",
	"42804": "the value's type does not match the column's",
	"42601": "syntax error",
	"3F000": "schema does not exist",
	"3D000": "database does not exist",
	"22P02": "invalid input for the column's type",
	"22007": "invalid date or time for the column's type",
	"22008": "date or time out of range",
	"22003": "numeric value out of range",
	"22001": "value too long for the column's type",
	"22021": "invalid byte sequence for the encoding",
	"22P05": "untranslatable character",
	"22023": "invalid parameter value",
	"23505": "unique key violation",
	"23503": "foreign key violation",
	"23502": "not-null violation",
	"23514": "check constraint violation",
	"25006": "not allowed in a read-only transaction",
	"40001": "serialization failure",
	"40P01": "deadlock detected",
	"55P03": "lock not available",
	"55006": "object in use",
	"53100": "disk full",
	"53200": "out of memory",
	"53300": "too many connections",
	"28P01": "password authentication failed",
	"28000": "invalid authorization",
}

// classDesc describes a SQLSTATE by its class, its first two characters.
var classDesc = map[string]string{
	"01": "warning", "02": "no data", "03": "SQL statement not yet complete", "08": "connection exception",
	"09": "triggered action exception", "0A": "feature not supported", "0B": "invalid transaction initiation",
	"0F": "locator exception", "0L": "invalid grantor", "0P": "invalid role specification",
	"0Z": "diagnostics exception", "20": "case not found", "21": "cardinality violation", "22": "data exception",
	"23": "integrity constraint violation", "24": "invalid cursor state", "25": "invalid transaction state",
	"26": "invalid SQL statement name", "27": "triggered data change violation",
	"28": "invalid authorization specification", "2B": "dependent privilege descriptors still exist",
	"2D": "invalid transaction termination", "2F": "SQL routine exception", "34": "invalid cursor name",
	"38": "external routine exception", "39": "external routine invocation exception", "3B": "savepoint exception",
	"3D": "invalid catalog name", "3F": "invalid schema name", "40": "transaction rollback",
	"42": "syntax error or access rule violation", "44": "WITH CHECK OPTION violation",
	"53": "insufficient resources", "54": "program limit exceeded", "55": "object not in prerequisite state",
	"57": "operator intervention", "58": "system error", "72": "snapshot failure", "F0": "configuration file error",
	"HV": "foreign data wrapper error", "P0": "PL/pgSQL error", "XX": "internal error",
}

// dbError reduces a server error to its SQLSTATE and a fixed description.
func dbError(pgErr *pgconn.PgError) *sources.DBError {
	desc, ok := stateDesc[pgErr.Code]
	if !ok && len(pgErr.Code) >= 2 {
		desc, ok = classDesc[pgErr.Code[:2]]
	}
	if !ok {
		desc = "PostgreSQL error"
	}
	return &sources.DBError{State: pgErr.Code, Desc: desc, Err: pgErr}
}

// valueFree keeps a server error's message out of err's text: server
// messages may quote row or filter values ("invalid input syntax for type
// integer: \"...\""), and backfill errors reach job records, replies and
// logs. The error's text becomes err's with the server message replaced by
// the value-free sources.DBError; errors.Is and errors.As see both the
// DBError (and through it the *pgconn.PgError) and err's own chain, so
// ErrDisconnected and the like still classify it.
func valueFree(err error) error {
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) {
		return err
	}
	return sources.ValueFree(err, dbError(pgErr), pgErr.Error(), pgErr.Message, pgErr.Detail)
}
