package hello

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The synthetic vector of amt-protocol.md §2.3.
func TestMarshalSpecVector(t *testing.T) {
	want := mustHex(t, `0000 0300 02000000 78563412bc9af0de1122334455667788 02
02 20 b55d12476549b20a39e27bac39c0841b21f448de861f8a4d570dc0d04bb53242
01 14 f7f776e487dad460bc8dc1c64ed71d9c078fcb00`)
	if len(want) != 81 {
		t.Fatalf("vector is %d bytes, spec says 81", len(want))
	}
	uuid, err := ParseUUID("12345678-9abc-def0-1122-334455667788")
	if err != nil {
		t.Fatal(err)
	}
	s256 := sha256.Sum256([]byte("example-root-1"))
	s1 := sha1.Sum([]byte("example-root-2"))
	p := Packet{Version: VersionPKI, RetryCount: 2, UUID: uuid, Hashes: []Hash{
		{Alg: SHA256, Sum: s256[:]}, {Alg: SHA1, Sum: s1[:]},
	}}
	got, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding differs\n got %x\nwant %x", got, want)
	}
	back, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if back.UUID != uuid || back.RetryCount != 2 || back.AdminCredentialsSet || len(back.Hashes) != 2 {
		t.Fatalf("round trip: %+v", back)
	}
}

// A real capture from an AMT device, published in MeshCentral's
// amtprovisioningserver.js (stored here as data only).
func TestParseMeshCentralCapture(t *testing.T) {
	raw, err := os.ReadFile("testdata/meshcentral-hello-807.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 807 {
		t.Fatalf("fixture is %d bytes", len(raw))
	}
	p, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !p.AdminCredentialsSet || p.Version != VersionPKI || p.RetryCount != 0 {
		t.Fatalf("header: %+v", p)
	}
	if got, want := p.UUID.String(), "939b524b-13d4-1d18-e487-1c697a6b7a2b"; got != want {
		t.Fatalf("uuid %s, want %s", got, want)
	}
	if len(p.Hashes) != 23 {
		t.Fatalf("%d hashes, want 23", len(p.Hashes))
	}
	for i, h := range p.Hashes {
		if h.Alg != SHA256 {
			t.Fatalf("hash %d is %s", i, h.Alg)
		}
	}
	if got := hex.EncodeToString(p.Hashes[0].Sum); got != "c3846bf24b9e93ca64274c0ec67c1ecc5e024ffcacd2d74019350e81fe546ae4" {
		t.Fatalf("first hash %s (Go Daddy Class 2 expected)", got)
	}
	again, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, raw) {
		t.Fatal("re-encoding the capture does not reproduce it")
	}
}

func TestPSKRoundTrip(t *testing.T) {
	uuid, _ := ParseUUID("939b524b-13d4-1d18-e487-1c697a6b7a2b")
	p := Packet{Version: VersionPSK, RetryCount: 14, UUID: uuid, PID: "ABCD1234", AdminCredentialsSet: true}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 32 {
		t.Fatalf("v2 hello is %d bytes, want 32", len(b))
	}
	if !bytes.Equal(b[8:12], []byte{0x4b, 0x52, 0x9b, 0x93}) {
		t.Fatalf("uuid not in wire order: %x", b[8:24])
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.PID != "ABCD1234" || back.RetryCount != 14 || back.UUID != uuid || !back.AdminCredentialsSet {
		t.Fatalf("round trip: %+v", back)
	}
}

func TestParseRejects(t *testing.T) {
	good := func() []byte {
		s := sha256.Sum256([]byte("x"))
		b, _ := Packet{Version: VersionPKI, Hashes: []Hash{{Alg: SHA256, Sum: s[:]}}}.Marshal()
		return b
	}
	tests := []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"short header", func(b []byte) []byte { return b[:20] }},
		{"admin field 2", func(b []byte) []byte { b[0] = 2; return b }},
		{"version 4", func(b []byte) []byte { b[2] = 4; return b }},
		{"unknown hash type", func(b []byte) []byte { b[25] = 4; return b }},
		{"length mismatch", func(b []byte) []byte { b[26] = 20; return b }},
		{"count too high", func(b []byte) []byte { b[24] = 2; return b }},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0) }},
		{"truncated hash", func(b []byte) []byte { return b[:len(b)-1] }},
		{"v2 wrong length", func(b []byte) []byte { b[2] = 2; return b }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.mutate(good())); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestMarshalRejects(t *testing.T) {
	bad := []Packet{
		{Version: VersionPKI, Hashes: []Hash{{Alg: SHA1, Sum: make([]byte, 32)}}},
		{Version: VersionPKI, Hashes: []Hash{{Alg: 9, Sum: make([]byte, 32)}}},
		{Version: VersionPSK, PID: "SHORT"},
		{Version: 7},
	}
	for i, p := range bad {
		if _, err := p.Marshal(); err == nil {
			t.Errorf("packet %d encoded", i)
		}
	}
}

// Anything Parse accepts must re-encode to the same bytes: the parser is
// strict, so there is exactly one encoding per packet.
func FuzzParse(f *testing.F) {
	if raw, err := os.ReadFile("testdata/meshcentral-hello-807.bin"); err == nil {
		f.Add(raw)
	}
	f.Add([]byte("\x01\x00\x02\x00\x0e\x00\x00\x00KR\x9b\x93\xd4\x13\x18\x1d\xe4\x87\x1cizkz+ABCD1234"))
	f.Add([]byte{0, 0, 3, 0, 0, 0, 0, 0, 16: 0, 24: 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		again, err := p.Marshal()
		if err != nil {
			t.Fatalf("parsed packet does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip differs:\n in %x\nout %x", b, again)
		}
	})
}
