package mysql

import "github.com/sluice-cdc/sluice/sources"

// valueKind maps a column's DATA_TYPE as loadTable keeps it (lower case;
// "json" also for MariaDB's checked LONGTEXT, see markJSON) to the kind of
// the JSON its values are written as. BOOLEAN is TINYINT(1): its values
// are the integers 1 and 0. Types without a fixed JSON form (bit,
// geometry, MariaDB's inet6) are KindOther.
func valueKind(dataType string) sources.Kind {
	switch dataType {
	case "tinyint", "smallint", "mediumint", "int", "bigint", "year":
		return sources.KindInteger
	case "decimal":
		return sources.KindDecimal
	case "float", "double":
		return sources.KindFloat
	case "date":
		return sources.KindDate
	case "time":
		return sources.KindTime
	case "datetime", "timestamp":
		return sources.KindTimestamp
	case "uuid": // MariaDB 10.7+
		return sources.KindUUID
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return sources.KindBytes
	case "json":
		return sources.KindJSON
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set":
		return sources.KindString
	}
	return sources.KindOther
}
