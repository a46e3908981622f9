package mysql

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
)

// position is where in the binlog a source stands: a GTID set when the
// server has GTIDs, else a binlog file and offset.
type position struct {
	gtid mysql.GTIDSet // nil in file mode
	file string
	pos  uint32
}

// Position text forms: "gtid:0-1-57,1-2-9" (MariaDB), "gtid:3E11FA47-...:1-57"
// (MySQL), "file:binlog.000003:1234".
func (p position) String() string {
	if p.gtid != nil {
		return "gtid:" + p.gtid.String()
	}
	return "file:" + p.file + ":" + strconv.FormatUint(uint64(p.pos), 10)
}

func parsePosition(flavor string, s sources.Position) (position, error) {
	kind, rest, ok := strings.Cut(string(s), ":")
	switch {
	case ok && kind == "gtid":
		set, err := mysql.ParseGTIDSet(flavor, rest)
		if err != nil {
			return position{}, fmt.Errorf("checkpoint position %q is not a %s GTID set: %w", s, flavor, err)
		}
		return position{gtid: set}, nil
	case ok && kind == "file":
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			break
		}
		n, err := strconv.ParseUint(rest[i+1:], 10, 32)
		if err != nil {
			break
		}
		return position{file: rest[:i], pos: uint32(n)}, nil
	}
	return position{}, fmt.Errorf("checkpoint position %q is not a MySQL position (gtid:... or file:name:offset)", s)
}
