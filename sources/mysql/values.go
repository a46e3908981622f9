package mysql

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"

	"github.com/sluice-cdc/sluice/sources"
)

// kind is how a column's values are written, decided once per table map
// from the binlog type and the column's attributes.
type kind uint8

const (
	kindInt kind = iota
	kindFloat32
	kindFloat64
	kindDecimal  // exact decimal string
	kindDate     // "2024-02-29"
	kindTime     // "13:45:06.5", may be negative or over 24h
	kindDatetime // RFC 3339 in UTC
	kindYear
	kindText // character data in a charset
	kindBytes
	kindJSON
	kindEnum
	kindSet
	kindBit
)

// colCodec writes one column's values as JSON.
type colCodec struct {
	name     string
	kind     kind
	bits     uint     // integer width, to undo a signed reading of an unsigned column
	unsigned bool     // integer column is UNSIGNED
	labels   []string // enum and set members
	charset  string   // text columns
}

// appendValue appends the JSON form of v, a value as go-mysql decodes it.
func (c *colCodec) appendValue(dst []byte, v any) ([]byte, error) {
	if v == nil {
		return append(dst, "null"...), nil
	}
	switch c.kind {
	case kindInt, kindYear, kindBit:
		return c.appendInt(dst, v)
	case kindEnum:
		n, err := c.index(v)
		if err != nil {
			return dst, err
		}
		if n == 0 || n > uint64(len(c.labels)) {
			// MySQL stores an invalid value as index 0, shown as ''.
			return append(dst, `""`...), nil
		}
		return sources.AppendJSONString(dst, []byte(c.labels[n-1])), nil
	case kindSet:
		n, err := c.index(v)
		if err != nil {
			return dst, err
		}
		var names []string
		for i, l := range c.labels {
			if n&(1<<uint(i)) != 0 {
				names = append(names, l)
			}
		}
		return sources.AppendJSONString(dst, []byte(strings.Join(names, ","))), nil
	case kindFloat32:
		f, ok := v.(float32)
		if !ok {
			return dst, c.wrongType(v)
		}
		return appendFloat(dst, float64(f), 32), nil
	case kindFloat64:
		f, ok := v.(float64)
		if !ok {
			return dst, c.wrongType(v)
		}
		return appendFloat(dst, f, 64), nil
	case kindDecimal, kindDate, kindTime:
		s, ok := v.(string)
		if !ok {
			return dst, c.wrongType(v)
		}
		return sources.AppendJSONString(dst, []byte(s)), nil
	case kindDatetime:
		s, ok := v.(string)
		if !ok {
			return dst, c.wrongType(v)
		}
		if len(s) < 19 || strings.HasPrefix(s, "0000-00-00") {
			// The zero date has no RFC 3339 form: keep MySQL's text.
			return sources.AppendJSONString(dst, []byte(s)), nil
		}
		return sources.AppendJSONString(dst, []byte(s[:10]+"T"+s[11:]+"Z")), nil
	case kindJSON:
		b := bytesOf(v)
		if len(b) == 0 {
			// An empty document is how MySQL stores JSON null.
			return append(dst, "null"...), nil
		}
		if !json.Valid(b) {
			return sources.AppendJSONString(dst, b), nil
		}
		return append(dst, b...), nil
	case kindBytes:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, bytesOf(v))
		return append(dst, '"'), nil
	case kindText:
		s, err := c.text(bytesOf(v))
		if err != nil {
			return dst, err
		}
		return sources.AppendJSONString(dst, []byte(s)), nil
	}
	return dst, c.wrongType(v)
}

func (c *colCodec) wrongType(v any) error {
	return fmt.Errorf("column %s: unexpected %T from the binlog decoder", c.name, v)
}

func (c *colCodec) appendInt(dst []byte, v any) ([]byte, error) {
	var n int64
	switch x := v.(type) {
	case int8:
		n = int64(x)
	case int16:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case int:
		n = int64(x)
	case uint8:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(dst, x, 10), nil
	default:
		return dst, c.wrongType(v)
	}
	if n < 0 && (c.unsigned || c.kind == kindBit) {
		// Read as signed without the binlog's signedness metadata.
		u := uint64(n)
		if c.bits < 64 {
			u &= 1<<c.bits - 1
		}
		return strconv.AppendUint(dst, u, 10), nil
	}
	return strconv.AppendInt(dst, n, 10), nil
}

func (c *colCodec) index(v any) (uint64, error) {
	switch x := v.(type) {
	case int64:
		return uint64(x), nil
	case int32:
		return uint64(uint32(x)), nil
	case uint64:
		return x, nil
	case int:
		return uint64(x), nil
	}
	return 0, c.wrongType(v)
}

// text converts a column's bytes to UTF-8.
func (c *colCodec) text(b []byte) (string, error) {
	switch c.charset {
	case "", "utf8", "utf8mb3", "utf8mb4", "ascii":
		return string(b), nil
	case "latin1":
		// MySQL's latin1 is Windows-1252.
		return charmap.Windows1252.NewDecoder().String(string(b))
	case "binary":
		return "", fmt.Errorf("column %s: binary data taken for text", c.name)
	}
	if utf8.Valid(b) {
		return string(b), nil
	}
	return "", fmt.Errorf("column %s: character set %s is not supported: convert the column to utf8mb4 (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4)", c.name, c.charset)
}

func bytesOf(v any) []byte {
	switch x := v.(type) {
	case []byte:
		return x
	case string:
		return []byte(x)
	}
	return nil
}

func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		// MySQL cannot store these, but a JSON document must stay valid.
		return strconv.AppendQuote(dst, strconv.FormatFloat(f, 'g', -1, bits))
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}
