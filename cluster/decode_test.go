package cluster

import (
	"errors"
	"strings"
	"testing"
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
