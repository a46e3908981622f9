package postgres

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-cdc/sluice/sources"
)

// valueDecoder appends the JSON form of one column's text-format value to
// dst. The replication session fixes the text formats (sessionSettings), so
// each decoder knows exactly what it will see. SQL NULL never reaches a
// decoder; NULL array elements do.
type valueDecoder func(dst []byte, text []byte) ([]byte, error)

// pgType describes a type that is not built in, as pg_type has it.
type pgType struct {
	OID   uint32
	Name  string // typname; "_mood" is the array of "mood"
	Kind  byte   // typtype: 'b' base, 'e' enum, 'd' domain, 'c' composite, 'r' range, 'm' multirange, 'p' pseudo
	Elem  uint32 // element type of an array type, else 0
	Base  uint32 // base type of a domain, else 0
	Delim byte   // array element delimiter
}

// arrayElems maps built-in array types to their element types.
var arrayElems = map[uint32]uint32{
	pgtype.BoolArrayOID: pgtype.BoolOID, pgtype.ByteaArrayOID: pgtype.ByteaOID, pgtype.QCharArrayOID: pgtype.QCharOID,
	pgtype.NameArrayOID: pgtype.NameOID, pgtype.Int2ArrayOID: pgtype.Int2OID, pgtype.Int4ArrayOID: pgtype.Int4OID,
	pgtype.TextArrayOID: pgtype.TextOID, pgtype.BPCharArrayOID: pgtype.BPCharOID, pgtype.VarcharArrayOID: pgtype.VarcharOID,
	pgtype.Int8ArrayOID: pgtype.Int8OID, pgtype.Float4ArrayOID: pgtype.Float4OID, pgtype.Float8ArrayOID: pgtype.Float8OID,
	pgtype.OIDArrayOID: pgtype.OIDOID, pgtype.XIDArrayOID: pgtype.XIDOID, pgtype.TimestampArrayOID: pgtype.TimestampOID,
	pgtype.DateArrayOID: pgtype.DateOID, pgtype.TimeArrayOID: pgtype.TimeOID, pgtype.TimestamptzArrayOID: pgtype.TimestamptzOID,
	pgtype.IntervalArrayOID: pgtype.IntervalOID, pgtype.NumericArrayOID: pgtype.NumericOID, pgtype.TimetzArrayOID: pgtype.TimetzOID,
	pgtype.UUIDArrayOID: pgtype.UUIDOID, pgtype.JSONArrayOID: pgtype.JSONOID, pgtype.JSONBArrayOID: pgtype.JSONBOID,
	pgtype.InetArrayOID: pgtype.InetOID, pgtype.CIDRArrayOID: pgtype.CIDROID, pgtype.MacaddrArrayOID: pgtype.MacaddrOID,
	pgtype.BitArrayOID: pgtype.BitOID, pgtype.VarbitArrayOID: pgtype.VarbitOID, pgtype.BoxArrayOID: pgtype.BoxOID,
	pgtype.PointArrayOID: pgtype.PointOID, pgtype.XMLArrayOID: pgtype.XMLOID,
}

// newDecoder returns the decoder for a column of type oid. lookup resolves
// types that are not built in; a type it cannot resolve is sent as text.
func newDecoder(oid uint32, lookup func(oid uint32) (pgType, bool)) (valueDecoder, error) {
	return decoderFor(oid, lookup, 0)
}

func decoderFor(oid uint32, lookup func(uint32) (pgType, bool), depth int) (valueDecoder, error) {
	if depth > 8 {
		return nil, fmt.Errorf("type %d: domains or arrays nested too deep", oid)
	}
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID:
		return decodeInteger, nil
	case pgtype.NumericOID:
		return decodeNumeric, nil
	case pgtype.Float4OID, pgtype.Float8OID:
		return decodeFloat, nil
	case pgtype.BoolOID:
		return decodeBool, nil
	case pgtype.JSONOID, pgtype.JSONBOID:
		return decodeJSON, nil
	case pgtype.ByteaOID:
		return decodeBytea, nil
	case pgtype.DateOID:
		return decodeDate, nil
	case pgtype.TimestampOID:
		return decodeTimestamp, nil
	case pgtype.TimestamptzOID:
		return decodeTimestamptz, nil
	case pgtype.TimetzOID:
		return decodeTimetz, nil
	}
	if elem, ok := arrayElems[oid]; ok {
		delim := byte(',')
		if elem == pgtype.BoxOID {
			delim = ';'
		}
		return arrayDecoder(elem, delim, lookup, depth)
	}
	// OIDs below FirstNormalObjectId are built in: no enum or domain there.
	const firstNormalObjectID = 16384
	if oid < firstNormalObjectID || lookup == nil {
		return decodeString, nil
	}
	t, ok := lookup(oid)
	if !ok {
		return decodeString, nil
	}
	switch {
	case t.Kind == 'd' && t.Base != 0:
		return decoderFor(t.Base, lookup, depth+1)
	case t.Elem != 0 && len(t.Name) > 0 && t.Name[0] == '_':
		delim := t.Delim
		if delim == 0 {
			delim = ','
		}
		return arrayDecoder(t.Elem, delim, lookup, depth)
	}
	// Enums are their labels; composites, ranges and extension types their
	// text form.
	return decodeString, nil
}

func arrayDecoder(elem uint32, delim byte, lookup func(uint32) (pgType, bool), depth int) (valueDecoder, error) {
	dec, err := decoderFor(elem, lookup, depth+1)
	if err != nil {
		return nil, err
	}
	return func(dst, text []byte) ([]byte, error) {
		p := arrayParser{src: text, delim: delim, elem: dec}
		return p.parse(dst)
	}, nil
}

// bad formats a decode error by the value's type and length, never the
// value: errors reach logs and job records, where no row value may go
// (DESIGN.md "Security"). Callers add the table and column.
func bad(kind string, text []byte, why string) error {
	return fmt.Errorf("cannot decode a value of type %s (%d bytes): %s", kind, len(text), why)
}

func decodeInteger(dst, text []byte) ([]byte, error) {
	digits := text
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return dst, bad("integer", text, "no digits")
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return dst, bad("integer", text, "not a number")
		}
	}
	return append(dst, text...), nil
}

// decodeNumeric keeps the exact decimal as a string: a JSON number would be
// read as a float by most consumers.
func decodeNumeric(dst, text []byte) ([]byte, error) {
	for _, c := range text {
		if !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E' ||
			c == 'N' || c == 'a' || c == 'I' || c == 'n' || c == 'f' || c == 'i' || c == 't' || c == 'y') {
			return dst, bad("numeric", text, "not a number")
		}
	}
	dst = append(dst, '"')
	dst = append(dst, text...)
	return append(dst, '"'), nil
}

func decodeFloat(dst, text []byte) ([]byte, error) {
	switch string(text) {
	case "NaN", "Infinity", "-Infinity":
		dst = append(dst, '"')
		dst = append(dst, text...)
		return append(dst, '"'), nil
	}
	if len(text) == 0 {
		return dst, bad("float", text, "empty")
	}
	for _, c := range text {
		if !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return dst, bad("float", text, "not a number")
		}
	}
	return append(dst, text...), nil
}

func decodeBool(dst, text []byte) ([]byte, error) {
	switch string(text) {
	case "t":
		return append(dst, "true"...), nil
	case "f":
		return append(dst, "false"...), nil
	}
	return dst, bad("boolean", text, "want t or f")
}

func decodeJSON(dst, text []byte) ([]byte, error) {
	if len(text) == 0 {
		return dst, bad("json", text, "empty")
	}
	return append(dst, text...), nil
}

// decodeBytea turns the hex form (\x0aff) into base64.
func decodeBytea(dst, text []byte) ([]byte, error) {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' || len(text)%2 != 0 {
		return dst, bad("bytea", text, `want hex form \x...`)
	}
	raw := make([]byte, (len(text)-2)/2)
	if _, err := hex.Decode(raw, text[2:]); err != nil {
		return dst, bad("bytea", text, "not hex digits") // hex's error quotes the byte
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, raw)
	return append(dst, '"'), nil
}

func decodeString(dst, text []byte) ([]byte, error) {
	return sources.AppendJSONString(dst, text), nil
}

// decodeDate writes an ISO date; BC years become astronomical years
// (1 BC = 0000), so the string sorts and parses like any ISO date.
func decodeDate(dst, text []byte) ([]byte, error) {
	switch string(text) {
	case "infinity", "-infinity":
		return sources.AppendJSONString(dst, text), nil
	}
	date, bc := cutBC(text)
	if !isDate(date) {
		return dst, bad("date", text, "want YYYY-MM-DD")
	}
	dst = append(dst, '"')
	dst, err := appendYear(dst, date[:len(date)-6], bc, text)
	if err != nil {
		return dst, err
	}
	dst = append(dst, date[len(date)-6:]...)
	return append(dst, '"'), nil
}

// decodeTimestamp writes a timestamp without time zone as RFC 3339 in UTC:
// the column stores no zone, and consumers need one to parse it.
func decodeTimestamp(dst, text []byte) ([]byte, error) {
	return appendTimestamp(dst, text, false)
}

// decodeTimestamptz writes RFC 3339; the session's TimeZone is UTC, so the
// offset is normally +00 and becomes Z.
func decodeTimestamptz(dst, text []byte) ([]byte, error) {
	return appendTimestamp(dst, text, true)
}

func appendTimestamp(dst, text []byte, withZone bool) ([]byte, error) {
	switch string(text) {
	case "infinity", "-infinity":
		return sources.AppendJSONString(dst, text), nil
	}
	body, bc := cutBC(text)
	sp := indexByte(body, ' ')
	if sp < 0 || !isDate(body[:sp]) {
		return dst, bad("timestamp", text, "want YYYY-MM-DD hh:mm:ss")
	}
	date, clock := body[:sp], body[sp+1:]
	zone := []byte(nil)
	if withZone {
		i := lastIndexAny(clock, "+-")
		if i < 8 {
			return dst, bad("timestamptz", text, "no zone offset")
		}
		clock, zone = clock[:i], clock[i:]
	}
	if !isClock(clock) {
		return dst, bad("timestamp", text, "want hh:mm:ss[.ffffff]")
	}
	dst = append(dst, '"')
	dst, err := appendYear(dst, date[:len(date)-6], bc, text)
	if err != nil {
		return dst, err
	}
	dst = append(dst, date[len(date)-6:]...)
	dst = append(dst, 'T')
	dst = append(dst, clock...)
	if withZone {
		if dst, err = appendZone(dst, zone, text); err != nil {
			return dst, err
		}
	} else {
		dst = append(dst, 'Z')
	}
	return append(dst, '"'), nil
}

// decodeTimetz writes hh:mm:ss[.f] with a normalized zone: 13:45:00+02
// becomes 13:45:00+02:00, and +00 becomes Z.
func decodeTimetz(dst, text []byte) ([]byte, error) {
	i := lastIndexAny(text, "+-")
	if i < 8 || !isClock(text[:i]) {
		return dst, bad("timetz", text, "want hh:mm:ss[.ffffff]+zz")
	}
	dst = append(dst, '"')
	dst = append(dst, text[:i]...)
	dst, err := appendZone(dst, text[i:], text)
	if err != nil {
		return dst, err
	}
	return append(dst, '"'), nil
}

// appendZone normalizes a Postgres offset (+02, -03:30, +00:53:28).
func appendZone(dst, zone, text []byte) ([]byte, error) {
	ok := len(zone) == 3 || len(zone) == 6 && zone[3] == ':' || len(zone) == 9 && zone[3] == ':' && zone[6] == ':'
	if !ok {
		return dst, bad("time zone", text, "unexpected offset")
	}
	for i := 1; i < len(zone); i++ {
		if zone[i] != ':' && (zone[i] < '0' || zone[i] > '9') {
			return dst, bad("time zone", text, "unexpected offset")
		}
	}
	zero := true
	for _, c := range zone[1:] {
		if c != '0' && c != ':' {
			zero = false
		}
	}
	if zero {
		return append(dst, 'Z'), nil
	}
	dst = append(dst, zone...)
	if len(zone) == 3 {
		dst = append(dst, ":00"...)
	}
	return dst, nil
}

func cutBC(text []byte) ([]byte, bool) {
	if n := len(text); n > 3 && string(text[n-3:]) == " BC" {
		return text[:n-3], true
	}
	return text, false
}

// appendYear writes a year, turning N BC into the astronomical year 1-N.
func appendYear(dst, year []byte, bc bool, text []byte) ([]byte, error) {
	if !bc {
		return append(dst, year...), nil
	}
	n := 0
	for _, c := range year {
		n = n*10 + int(c-'0')
	}
	if n < 1 {
		return dst, bad("date", text, "year 0 BC")
	}
	if n == 1 {
		return append(dst, "0000"...), nil
	}
	return fmt.Appendf(dst, "-%04d", n-1), nil
}

// isDate checks YYYY-MM-DD, allowing years of more than four digits.
func isDate(b []byte) bool {
	if len(b) < 10 || b[len(b)-3] != '-' || b[len(b)-6] != '-' {
		return false
	}
	for i, c := range b {
		if i == len(b)-3 || i == len(b)-6 {
			continue
		}
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isClock checks hh:mm:ss with an optional fraction.
func isClock(b []byte) bool {
	if len(b) < 8 || b[2] != ':' || b[5] != ':' {
		return false
	}
	for i, c := range b {
		switch {
		case i == 2 || i == 5:
		case i == 8:
			if c != '.' {
				return false
			}
		case c < '0' || c > '9':
			return false
		}
	}
	return len(b) != 9
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func lastIndexAny(b []byte, chars string) int {
	for i := len(b) - 1; i >= 0; i-- {
		for j := 0; j < len(chars); j++ {
			if b[i] == chars[j] {
				return i
			}
		}
	}
	return -1
}

// arrayParser turns a Postgres array literal into a JSON array:
// {1,2}, {"a b","c\"d",NULL}, {{1,2},{3,4}}, [0:1]={1,2}.
type arrayParser struct {
	src     []byte
	pos     int
	delim   byte
	elem    valueDecoder
	scratch []byte
}

func (p *arrayParser) parse(dst []byte) ([]byte, error) {
	if len(p.src) > 0 && p.src[0] == '[' {
		// Explicit bounds: the JSON array keeps the elements, not the bounds.
		eq := indexByte(p.src, '=')
		if eq < 0 {
			return dst, bad("array", p.src, "bounds without '='")
		}
		p.pos = eq + 1
	}
	dst, err := p.array(dst)
	if err != nil {
		return dst, err
	}
	if p.pos != len(p.src) {
		return dst, bad("array", p.src, "trailing characters")
	}
	return dst, nil
}

func (p *arrayParser) array(dst []byte) ([]byte, error) {
	if p.pos >= len(p.src) || p.src[p.pos] != '{' {
		return dst, bad("array", p.src, "want '{'")
	}
	p.pos++
	dst = append(dst, '[')
	if p.pos < len(p.src) && p.src[p.pos] == '}' {
		p.pos++
		return append(dst, ']'), nil
	}
	for n := 0; ; n++ {
		if n > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = p.element(dst); err != nil {
			return dst, err
		}
		if p.pos >= len(p.src) {
			return dst, bad("array", p.src, "unterminated")
		}
		switch p.src[p.pos] {
		case p.delim:
			p.pos++
		case '}':
			p.pos++
			return append(dst, ']'), nil
		default:
			return dst, bad("array", p.src, fmt.Sprintf("unexpected character at byte %d", p.pos))
		}
	}
}

func (p *arrayParser) element(dst []byte) ([]byte, error) {
	for p.pos < len(p.src) && p.src[p.pos] == ' ' {
		p.pos++
	}
	if p.pos >= len(p.src) {
		return dst, bad("array", p.src, "unterminated")
	}
	switch p.src[p.pos] {
	case '{':
		return p.array(dst)
	case '"':
		p.pos++
		p.scratch = p.scratch[:0]
		for {
			if p.pos >= len(p.src) {
				return dst, bad("array", p.src, "unterminated quoted element")
			}
			c := p.src[p.pos]
			p.pos++
			if c == '\\' && p.pos < len(p.src) {
				c = p.src[p.pos]
				p.pos++
			} else if c == '"' {
				break
			}
			p.scratch = append(p.scratch, c)
		}
		return p.elem(dst, p.scratch)
	}
	start := p.pos
	for p.pos < len(p.src) && p.src[p.pos] != p.delim && p.src[p.pos] != '}' {
		p.pos++
	}
	end := p.pos
	for end > start && p.src[end-1] == ' ' {
		end--
	}
	v := p.src[start:end]
	if len(v) == 4 && (v[0]|0x20) == 'n' && (v[1]|0x20) == 'u' && (v[2]|0x20) == 'l' && (v[3]|0x20) == 'l' {
		return append(dst, "null"...), nil
	}
	return p.elem(dst, v)
}
