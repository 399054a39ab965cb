package cluster

import (
	"context"
	"errors"
	"testing"
)

func TestCreateAuthority(t *testing.T) {
	s := NewMemory()
	ctx := context.Background()
	key, _ := s.Seal([]byte("ca key"))
	first := Authority{Name: "management", CertPEM: "first", Key: key, Created: t0}
	tests := []struct {
		name    string
		a       Authority
		wantErr error
		wantPEM string
	}{
		{"first create wins", first, nil, "first"},
		{"second create of the name conflicts", Authority{Name: "management", CertPEM: "second", Key: key, Created: t0}, ErrConflict, "first"},
		{"incomplete authority refused", Authority{Name: "management", CertPEM: "third"}, errAny, "first"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Apply(ctx, CreateAuthority{Authority: tc.a, Time: t0})
			switch {
			case tc.wantErr == nil && err != nil, tc.wantErr == errAny && err == nil,
				tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			got, ok := s.Authority("management")
			if !ok || got.CertPEM != tc.wantPEM {
				t.Fatalf("authority = %+v, %v; want certificate %q", got, ok, tc.wantPEM)
			}
			if plain, err := s.Unseal(got.Key); err != nil || string(plain) != "ca key" {
				t.Errorf("key unseals to %q, %v", plain, err)
			}
		})
	}
	if _, ok := s.Authority("other"); ok {
		t.Error("an authority nobody created exists")
	}
}

// errAny stands for "some error" in tables.
var errAny = errors.New("any error")
