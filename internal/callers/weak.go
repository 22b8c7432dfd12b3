package callers

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
)

// MinKeyLength is the shortest key `keybroker hash-key -stdin` accepts.
// Keys it makes are 46 characters (kb_ and 32 random bytes).
const MinKeyLength = 16

// weakWords are keys that examples, tutorials and tired people use. A
// key_sha256 of any of them (or of the caller's own name) is refused: an
// attacker tries these first.
var weakWords = []string{
	"", "test", "test1", "test2", "test3", "test123", "testing", "password",
	"password1", "passw0rd", "admin", "administrator", "root", "changeme",
	"change-me", "changeit", "secret", "key", "apikey", "api-key", "api_key",
	"token", "keybroker", "caller", "demo", "dev", "example", "default",
	"letmein", "welcome", "guest", "user", "foo", "bar", "foobar", "x",
	"123456", "12345678", "1234567890", "qwerty", "abc123", "hunter2",
}

// IsWeakKeyHash reports whether sum (the raw SHA-256 of a key) is the hash
// of the empty string, of a well-known word, or of the caller's own name:
// as typed, capitalised or upper-cased, with or without the newline that
// `echo word | sha256sum` adds. It never says which word.
func IsWeakKeyHash(sum []byte, caller string) bool {
	words := append([]string{caller}, weakWords...)
	weak := 0
	for _, w := range words {
		for _, v := range []string{w, strings.ToUpper(w), capitalise(w)} {
			for _, s := range []string{v, v + "\n"} {
				h := sha256.Sum256([]byte(s))
				weak |= subtle.ConstantTimeCompare(h[:], sum)
			}
		}
	}
	return weak == 1
}

func capitalise(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
