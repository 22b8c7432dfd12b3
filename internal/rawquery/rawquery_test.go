package rawquery

import "testing"

func TestDrop(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"", ""},
		{"access_token=k&limit=10", "limit=10"},
		{"limit=10&Access_Token=k", "limit=10"},
		{"access%5Ftoken=k&a=%zz&b", "a=%zz&b"},
		{"a=1&&access_token=&b=2", "a=1&&b=2"},
		{"x=access_token", "x=access_token"},
	} {
		if got := Drop(tc.raw, "access_token"); got != tc.want {
			t.Errorf("Drop(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
	if got := Drop("a=1", []string{}...); got != "a=1" {
		t.Errorf("no names: %q", got)
	}
}

func TestFilter_GivesDecodedNameValueAndRawPair(t *testing.T) {
	var seen [][3]string
	out := Filter("a%20b=c%2Bd&e=%zz", func(n, v, p string) bool {
		seen = append(seen, [3]string{n, v, p})
		return n == "a b"
	})
	if out != "e=%zz" || len(seen) != 2 || seen[0] != [3]string{"a b", "c+d", "a%20b=c%2Bd"} || seen[1] != [3]string{"e", "%zz", "e=%zz"} {
		t.Errorf("out %q, seen %v", out, seen)
	}
}
