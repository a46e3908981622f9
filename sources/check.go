package sources

import (
	"errors"
	"strings"
)

// Plain returns an error's message without the leading names of this
// package's sentinel errors, for lists of problems that already say what
// kind they are.
func Plain(err error) string {
	msg := err.Error()
	for _, s := range []error{ErrPrerequisite, ErrNoPrimaryKey, ErrDisconnected, ErrLogLost, ErrLoginRejected, ErrUnsupportedKey, ErrTLS} {
		if errors.Is(err, s) {
			msg = strings.ReplaceAll(msg, s.Error()+": ", "")
		}
	}
	return msg
}
