package hello

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The synthetic vector of amt-protocol.md §2.3, byte for byte.
const specVector = `
0000 0300 02000000 78563412bc9af0de1122334455667788 02
02 20 b55d12476549b20a39e27bac39c0841b21f448de861f8a4d570dc0d04bb53242
01 14 f7f776e487dad460bc8dc1c64ed71d9c078fcb00`

func TestSpecVector(t *testing.T) {
	wire := unhex(t, specVector)
	if len(wire) != 81 {
		t.Fatalf("vector is %d bytes, spec says 81", len(wire))
	}
	h, err := Parse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if h.AdminCredentialsSet || h.Version != 3 || h.RetryCount != 2 {
		t.Errorf("header = %+v", h)
	}
	if got := h.UUIDString(); got != "12345678-9abc-def0-1122-334455667788" {
		t.Errorf("uuid = %s", got)
	}
	want := []string{
		"sha256:b55d12476549b20a39e27bac39c0841b21f448de861f8a4d570dc0d04bb53242",
		"sha1:f7f776e487dad460bc8dc1c64ed71d9c078fcb00",
	}
	if got := h.HashStrings(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("hashes = %v", got)
	}
	u, _ := ParseUUID("12345678-9abc-def0-1122-334455667788")
	built, err := Hello{Version: VersionPKI, RetryCount: 2, UUID: u, Hashes: h.Hashes}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(built, wire) {
		t.Errorf("marshal:\n got %x\nwant %x", built, wire)
	}
}

// A real device's hello, captured by MeshCentral (amt-protocol.md §2.3/§4.3).
func TestMeshCentralCapture(t *testing.T) {
	wire, err := os.ReadFile(filepath.Join("testdata", "meshcentral-hello-807.bin"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := Parse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if !h.AdminCredentialsSet || h.Version != 3 || h.RetryCount != 0 {
		t.Errorf("header = admin %v version %d retry %d", h.AdminCredentialsSet, h.Version, h.RetryCount)
	}
	if got := h.UUIDString(); got != "939b524b-13d4-1d18-e487-1c697a6b7a2b" {
		t.Errorf("uuid = %s", got)
	}
	if len(h.Hashes) != 23 {
		t.Fatalf("%d hashes, want 23", len(h.Hashes))
	}
	// First and last entries of the spec's §4.3 table (Go Daddy Class 2, GlobalSign R6).
	if got := h.Hashes[0].String(); got != "sha256:c3846bf24b9e93ca64274c0ec67c1ecc5e024ffcacd2d74019350e81fe546ae4" {
		t.Errorf("first hash = %s", got)
	}
	if got := h.Hashes[22].String(); got != "sha256:2cabeafe37d06ca22aba7391c0033d25982952c453647349763a3ab5ad6ccf69" {
		t.Errorf("last hash = %s", got)
	}
	again, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, wire) {
		t.Error("re-encoding the capture changed it")
	}
}

func TestPSKHello(t *testing.T) {
	u, _ := ParseUUID("939b524b-13d4-1d18-e487-1c697a6b7a2b")
	h := Hello{Version: VersionPSK, RetryCount: 14, UUID: u, PID: "AB12CD34"}
	wire, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "0000 0200 0e000000 4b529b93d413181de4871c697a6b7a2b 4142313243443334")
	if !bytes.Equal(wire, want) {
		t.Fatalf("wire = %x\nwant   %x", wire, want)
	}
	back, err := Parse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if back.PID != "AB12CD34" || back.UUID != u || back.RetryCount != 14 {
		t.Errorf("parsed %+v", back)
	}
}

func TestParseRejects(t *testing.T) {
	good := unhex(t, specVector)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only", good[:24], ErrShort},
		{"admin flag 2", mutate(func(b []byte) []byte { b[0] = 2; return b }), ErrMalformed},
		{"version 4", mutate(func(b []byte) []byte { b[2] = 4; return b }), ErrVersion},
		{"count larger than entries", mutate(func(b []byte) []byte { b[24] = 3; return b }), ErrShort},
		{"hash type 4", mutate(func(b []byte) []byte { b[25] = 4; return b }), ErrMalformed},
		{"sha256 of length 20", mutate(func(b []byte) []byte { b[26] = 20; return b }), ErrMalformed},
		{"cut in last hash", good[:len(good)-1], ErrShort},
		{"psk too short", unhex(t, "0000 0200 00000000 4b529b93d413181de4871c697a6b7a2b 41423132"), ErrShort},
		{"psk pid lower case", unhex(t, "0000 0200 00000000 4b529b93d413181de4871c697a6b7a2b 6162313263643334"), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Parse(c.in); !errors.Is(err, c.want) {
				t.Errorf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestParseUUID(t *testing.T) {
	for _, s := range []string{"939B524B-13D4-1D18-E487-1C697A6B7A2B", "939b524b13d41d18e4871c697a6b7a2b"} {
		got, err := NormalizeUUID(s)
		if err != nil || got != "939b524b-13d4-1d18-e487-1c697a6b7a2b" {
			t.Errorf("NormalizeUUID(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "xyz", "939b524b-13d4-1d18-e487-1c697a6b7a2"} {
		if _, err := ParseUUID(s); err == nil {
			t.Errorf("ParseUUID(%q) accepted", s)
		}
	}
}

// FuzzParse checks that anything Parse accepts re-encodes to the bytes it
// consumed, and that Parse never panics.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			return
		}
		wire, err := h.Marshal()
		if err != nil {
			t.Fatalf("parsed hello does not marshal: %v", err)
		}
		if !bytes.Equal(wire, b[:len(wire)]) {
			t.Fatalf("round trip changed bytes:\n in  %x\n out %x", b[:len(wire)], wire)
		}
	})
}
