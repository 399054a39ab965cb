package setupbin

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestPSKFileRoundTrip(t *testing.T) {
	var recs []Record
	for _, p := range [][2]string{{"AB12CD34", "0123456789ABCDEF0123456789ABCDEF"}, {"ZZ99YY88", "FEDCBA9876543210FEDCBA9876543210"}} {
		r, err := PSKRecord(MEBx{New: "N3w-Mebx!"}, p[0], p[1])
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	for _, scrambled := range []bool{false, true} {
		b, err := File{Consume: true, Scrambled: scrambled, Records: recs}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 3*512 {
			t.Fatalf("%d bytes", len(b))
		}
		// Fixed header fields (amt-protocol.md §5.2).
		if !bytes.Equal(b[:16], fileTypeV3[:]) || binary.LittleEndian.Uint16(b[18:]) != 42+2*2 ||
			binary.LittleEndian.Uint32(b[28:]) != 2 || binary.LittleEndian.Uint16(b[40:]) != 1 || binary.LittleEndian.Uint16(b[42:]) != 2 {
			t.Errorf("header % x", b[:48])
		}
		if !scrambled {
			// First entry of record 1: module 1, var 1, length 5, "admin".
			want := []byte{1, 0, 1, 0, 5, 0, 0, 0, 'a', 'd', 'm', 'i', 'n'}
			if !bytes.Equal(b[512+24:512+24+len(want)], want) {
				t.Errorf("first entry % x", b[512+24:512+40])
			}
		}
		f, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if !f.Consume || f.Scrambled != scrambled || len(f.Records) != 2 {
			t.Fatalf("parsed %+v", f)
		}
		if pid, _ := f.Records[1].Get(PID); string(pid) != "ZZ99YY88" {
			t.Errorf("PID %q", pid)
		}
		if pps, _ := f.Records[0].Get(PPS); string(pps) != "0123456789ABCDEF0123456789ABCDEF" {
			t.Errorf("PPS %q", pps)
		}
	}
}

func TestBareMetalRecord(t *testing.T) {
	hash := bytes.Repeat([]byte{0xab}, 32)
	r, err := BareMetalRecord(BareMetal{
		MEBx: MEBx{New: "N3w-Mebx!"}, DNSSuffix: "branch1.example.com", RootSHA256: hash,
		Server: netip.MustParseAddr("10.1.0.2"), Port: 9971,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := File{Records: []Record{r}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint16(b[26:])&flagDoNotConsume == 0 {
		t.Error("shared pointer file must not be consumed")
	}
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	got := f.Records[0]
	if v, _ := got.Get(ServerAddress); !bytes.Equal(v, []byte{2, 0, 1, 10}) {
		t.Errorf("address % x", v)
	}
	if v, _ := got.Get(ServerPort); binary.LittleEndian.Uint16(v) != 9971 {
		t.Errorf("port % x", v)
	}
	if v, _ := got.Get(CustomHash); v[0] != 2 || !bytes.Equal(v[1:33], hash) || string(v[34:]) != "branchbox" {
		t.Errorf("custom hash % x", v)
	}
	last := got[len(got)-1]
	if last.Var != ProvisioningStart || last.Value[0] != 1 {
		t.Errorf("start flag is not last: %+v", last)
	}

	bad := []BareMetal{
		{MEBx: MEBx{New: "x"}, DNSSuffix: "a.example.com", RootSHA256: hash[:20], Server: netip.MustParseAddr("10.0.0.1")},
		{MEBx: MEBx{New: "x"}, DNSSuffix: "", RootSHA256: hash, Server: netip.MustParseAddr("10.0.0.1")},
		{MEBx: MEBx{New: "x"}, DNSSuffix: "a.example.com", RootSHA256: hash, Server: netip.MustParseAddr("::1")},
		{DNSSuffix: "a.example.com", RootSHA256: hash, Server: netip.MustParseAddr("10.0.0.1")},
	}
	for i, b := range bad {
		if _, err := BareMetalRecord(b); err == nil {
			t.Errorf("bad input %d accepted", i)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, b := range [][]byte{nil, make([]byte, 100), make([]byte, 512)} {
		if _, err := Parse(b); err == nil {
			t.Errorf("Parse(%d bytes) accepted", len(b))
		}
	}
	big := Record{{PKIDNSSuffix, bytes.Repeat([]byte("a"), 255)}, {ConfigServerFQDN, bytes.Repeat([]byte("b"), 255)}}
	if _, err := (File{Records: []Record{big}}).Marshal(); err == nil {
		t.Error("oversized record accepted")
	}
}
