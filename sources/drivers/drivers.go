// Package drivers is where each kind of source is registered: the one
// place that names them all. A new database adds one line to All.
package drivers

import (
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql"
	"github.com/sluice-cdc/sluice/sources/postgres"
)

// DefaultKind is source.kind when the config leaves it out.
const DefaultKind = "postgres"

// All returns every driver by its source.kind, in a new map each call.
func All() map[string]sources.Driver {
	return map[string]sources.Driver{
		"postgres": postgres.Driver{},
		"mysql":    mysql.Driver{}, // MySQL and MariaDB
	}
}
