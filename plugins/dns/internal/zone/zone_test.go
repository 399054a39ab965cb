package zone

import (
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"Branch1.Example.COM":  "branch1.example.com.",
		"branch1.example.com.": "branch1.example.com.",
	} {
		if got := Canonical(in); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFind(t *testing.T) {
	zones := map[string]string{
		"example.com.":         "outer",
		"branch1.example.com.": "inner",
	}
	tests := []struct {
		name    string
		want    string
		wantOff int
		found   bool
	}{
		{"branch1.example.com.", "inner", 0, true},
		{"host.branch1.example.com.", "inner", 5, true},
		{"a.b.branch1.example.com.", "inner", 4, true},
		{"other.example.com.", "outer", 6, true},
		{"example.org.", "", 0, false},
		{".", "", 0, false},
	}
	for _, tc := range tests {
		got, off, ok := Find(zones, tc.name)
		if got != tc.want || off != tc.wantOff || ok != tc.found {
			t.Errorf("Find(%q) = %q, %d, %v; want %q, %d, %v", tc.name, got, off, ok, tc.want, tc.wantOff, tc.found)
		}
	}
}

func TestNegative(t *testing.T) {
	r := new(dns.Msg)
	r.SetQuestion("nope.branch1.example.com.", dns.TypeA)
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, err := Write(rec, NegativeReply(r, dns.RcodeNameError, "branch1.example.com.", 30))
	if err != nil || rcode != dns.RcodeNameError {
		t.Fatalf("Write = %d, %v", rcode, err)
	}
	m := rec.Msg
	if !m.Authoritative || m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 || len(m.Ns) != 1 {
		t.Fatalf("unexpected reply:\n%v", m)
	}
	soa, ok := m.Ns[0].(*dns.SOA)
	if !ok || soa.Hdr.Name != "branch1.example.com." || soa.Minttl != 30 || soa.Hdr.Ttl != 30 {
		t.Fatalf("authority is not the zone's SOA: %v", m.Ns[0])
	}
}
