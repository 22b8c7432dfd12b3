package callers

import (
	"crypto/sha256"
	"testing"
)

func TestIsWeakKeyHash(t *testing.T) {
	for _, tc := range []struct {
		key, caller string
		weak        bool
	}{
		{"", "soar", true},
		{"test", "soar", true},
		{"test2", "soar", true},
		{"test\n", "soar", true},
		{"Password", "soar", true},
		{"CHANGEME", "soar", true},
		{"keybroker", "soar", true},
		{"soar-workflows", "soar-workflows", true},
		{"Soar-workflows\n", "soar-workflows", true},
		{"soar-workflows", "siem-collector", false},
		{"kb_Zx3s9Qd1pLm0vT7uY2wR8eN4aB6cF5hJ", "soar-workflows", false},
	} {
		sum := sha256.Sum256([]byte(tc.key))
		if got := IsWeakKeyHash(sum[:], tc.caller); got != tc.weak {
			t.Errorf("IsWeakKeyHash(sha256(%q), %q) = %v, want %v", tc.key, tc.caller, got, tc.weak)
		}
	}
	key, sum, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	raw := sha256.Sum256([]byte(key))
	if IsWeakKeyHash(raw[:], "soar-workflows") || len(key) < MinKeyLength {
		t.Errorf("a new key %s is judged weak or short", sum)
	}
}
