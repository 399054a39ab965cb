package cluster

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeCommandRefusals(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string // substring of the error; "" means errSkip
	}{
		{"empty", nil, "empty log entry"},
		{"unknown type", append([]byte{0x7f}, `{"v":1,"c":{}}`...), "unknown command type 127"},
		{"unknown but ignorable", append([]byte{0xff}, `{"v":1,"c":{}}`...), ""},
		{"future version", append([]byte{byte(TypeDeleteSite)}, `{"v":2,"c":{"name":"x"}}`...), "unsupported version 2"},
		{"broken body", append([]byte{byte(TypeDeleteSite)}, `{"v":1,"c":`...), "decode command type 2"},
		{"wrong shape", append([]byte{byte(TypeDeleteSite)}, `{"v":1,"c":{"name":7}}`...), "decode command type 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeCommand(tt.data)
			if tt.want == "" {
				if !errors.Is(err, errSkip) {
					t.Fatalf("got %v, want errSkip", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	cmd, err := decodeCommand(append([]byte{byte(TypeDeleteSite)}, `{"v":1,"c":{"name":"b1"}}`...))
	if d, ok := cmd.(*DeleteSite); err != nil || !ok || d.Name != "b1" {
		t.Fatalf("decoded %#v, %v", cmd, err)
	}
}

func TestLeaseBatchBinaryBody(t *testing.T) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)
	batch := LeaseBatch{Items: []LeaseCAS{
		{Time: at, Lease: Lease{IP: "10.0.0.5", MAC: "02:00:00:00:00:01", ClientID: "01020000000001", Hostname: "pc-1",
			Site: "b1", State: "bound", Start: at, Expires: at.Add(time.Hour)}},
		{Time: at, Lease: Lease{IP: "10.0.0.6", ClientID: "x", Site: "b1", State: "bound"}}, // zero times, no MAC
	}}
	data, err := encodeCommand(batch)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != byte(TypeLeaseBatch) || data[1] != binaryV1 {
		t.Fatalf("body starts %x, want the binary form", data[:2])
	}
	cmd, err := decodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := cmd.(*LeaseBatch); !reflect.DeepEqual(*got, batch) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", *got, batch)
	}
	// Entries written before the binary body still decode.
	old := append([]byte{byte(TypeLeaseBatch)}, `{"v":1,"c":{"items":[{"lease":{"ip":"10.0.0.7","client_id":"y"},"time":"2026-11-28T12:00:00Z"}]}}`...)
	if cmd, err := decodeCommand(old); err != nil || cmd.(*LeaseBatch).Items[0].Lease.IP != "10.0.0.7" {
		t.Fatalf("JSON lease batch: %#v, %v", cmd, err)
	}
	// Every truncation, a hostile count, trailing bytes and a future
	// version are refused, never half-applied.
	for n := 2; n < len(data); n++ {
		if _, err := decodeCommand(data[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: decoded", n)
		}
	}
	for name, bad := range map[string][]byte{
		"huge count":     {byte(TypeLeaseBatch), binaryV1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"trailing bytes": append(append([]byte{}, data...), 0),
		"version 2":      append([]byte{byte(TypeLeaseBatch), 2}, data[2:]...),
	} {
		if _, err := decodeCommand(bad); err == nil || !strings.Contains(err.Error(), "decode command type 15: lease batch") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeCommand: no log entry, however damaged, panics the FSM.
func FuzzDecodeCommand(f *testing.F) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	seed, _ := encodeCommand(LeaseBatch{Items: []LeaseCAS{{Time: at, Lease: Lease{IP: "10.0.0.5", ClientID: "c", Start: at, Expires: at}}}})
	f.Add(seed)
	f.Add(append([]byte{byte(TypeDeleteSite)}, `{"v":1,"c":{"name":"b1"}}`...))
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeCommand(data)
	})
}
