package mysql

import (
	"errors"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
)

// Error numbers go-mysql has no names for.
const (
	erQueryTimeout     = 3024 // MySQL: MAX_EXECUTION_TIME exceeded
	erStatementTimeout = 1969 // MariaDB: max_statement_time exceeded
	erInvalidJSONText  = 3140
	erReadOnlyTx       = 1792 // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
)

// codeDesc describes the error numbers the backfill paths meet most,
// without the values a server message may quote ("Truncated incorrect
// DOUBLE value: '...'", "Duplicate entry '...'").
var codeDesc = map[uint16]string{
	mysql.ER_TABLEACCESS_DENIED_ERROR:          "permission denied",
	mysql.ER_COLUMNACCESS_DENIED_ERROR:         "permission denied",
	mysql.ER_DBACCESS_DENIED_ERROR:             "permission denied",
	mysql.ER_SPECIFIC_ACCESS_DENIED_ERROR:      "permission denied",
	mysql.ER_ACCESS_DENIED_ERROR:               "access denied (user or password)",
	erQueryTimeout:                             "statement timeout (maximum execution time exceeded)",
	erStatementTimeout:                         "statement timeout (max_statement_time exceeded)",
	mysql.ER_QUERY_INTERRUPTED:                 "query interrupted",
	mysql.ER_BAD_FIELD_ERROR:                   "unknown column",
	mysql.ER_NO_SUCH_TABLE:                     "table does not exist",
	mysql.ER_BAD_DB_ERROR:                      "database does not exist",
	mysql.ER_PARSE_ERROR:                       "SQL syntax error",
	mysql.ER_TRUNCATED_WRONG_VALUE:             "invalid value for the column's type",
	mysql.ER_TRUNCATED_WRONG_VALUE_FOR_FIELD:   "invalid value for the column's type",
	mysql.WARN_DATA_TRUNCATED:                  "value truncated for the column's type",
	mysql.ER_WARN_DATA_OUT_OF_RANGE:            "value out of range for the column's type",
	mysql.ER_DATA_TOO_LONG:                     "value too long for the column",
	mysql.ER_CANT_AGGREGATE_2COLLATIONS:        "illegal mix of collations",
	mysql.ER_CANT_AGGREGATE_3COLLATIONS:        "illegal mix of collations",
	mysql.ER_CANT_AGGREGATE_NCOLLATIONS:        "illegal mix of collations",
	erInvalidJSONText:                          "invalid JSON text",
	mysql.ER_DUP_ENTRY:                         "duplicate key",
	mysql.ER_BAD_NULL_ERROR:                    "column cannot be null",
	mysql.ER_LOCK_WAIT_TIMEOUT:                 "lock wait timeout",
	mysql.ER_LOCK_DEADLOCK:                     "deadlock",
	erReadOnlyTx:                               "not allowed in a read-only transaction",
	mysql.ER_SERVER_SHUTDOWN:                   "the server is shutting down",
	mysql.ER_CON_COUNT_ERROR:                   "too many connections",
	mysql.ER_TOO_MANY_USER_CONNECTIONS:         "too many connections for the user",
	mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG: "cannot read the binlog",
}

// dbError reduces a server error to its number, SQLSTATE and a fixed
// description.
func dbError(myErr *mysql.MyError) *sources.DBError {
	desc, ok := codeDesc[myErr.Code]
	if !ok {
		desc = "MySQL error"
	}
	return &sources.DBError{State: myErr.State, Code: int(myErr.Code), Desc: desc, Err: myErr}
}

// valueFree keeps a server error's message out of err's text: it may quote
// row or filter values, and backfill errors reach job records, replies and
// logs. The error's text becomes err's with the server error replaced by
// the value-free sources.DBError; errors.Is and errors.As see both the
// DBError (and through it the *mysql.MyError) and err's own chain, so
// ErrDisconnected and the like still classify it.
func valueFree(err error) error {
	var myErr *mysql.MyError
	if err == nil || !errors.As(err, &myErr) {
		return err
	}
	return sources.ValueFree(err, dbError(myErr), myErr.Error(), myErr.Message)
}
