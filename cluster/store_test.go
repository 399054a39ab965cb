package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// everyCommand has one command of every type, in an order where each
// succeeds.
func everyCommand(t *testing.T, s *Store) []Command {
	t.Helper()
	key, err := s.Seal([]byte("-----BEGIN PRIVATE KEY----- s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := s.Seal([]byte("Adm1n-Secret!"))
	otp, _ := s.Seal([]byte("otp-123456"))
	pps, _ := s.Seal([]byte("PPS-SECRET-0000"))
	errMsg := ""
	return []Command{
		PutSite{Site: Site{Name: "b1", Domain: "b1.example.com", Subnet: "10.1.0.0/24", CertKey: key}, Time: t0},
		PutSite{Site: Site{Name: "gone", Domain: "g.example.com", Subnet: "10.9.0.0/24"}, Time: t0},
		DeleteSite{Name: "gone", Time: t0},
		PutProfile{Profile: Profile{Name: "std", AdminPassword: pw, KVM: true}, Time: t0},
		PutProfile{Profile: Profile{Name: "old"}, Time: t0},
		DeleteProfile{Name: "old", Time: t0},
		DeviceUpdate{UUID: "u1", Site: "b1", State: DeviceSeen, Hashes: []string{"aa"}, Event: DeviceEvent{State: DeviceSeen}, Time: t0},
		DeviceUpdate{UUID: "u1", State: DeviceActivated, LastError: &errMsg, Event: DeviceEvent{State: DeviceActivated, Step: "commit"}, Time: t0.Add(time.Second)},
		DeviceUpdate{UUID: "u2", Time: t0},
		DeleteDevice{UUID: "u2", Time: t0},
		CreateOTP{OTP: OTP{UUID: "u1", Secret: otp, Created: t0, Expires: t0.Add(time.Hour)}, Time: t0},
		ConsumeOTP{UUID: "u1", RequestID: "r1", Time: t0.Add(time.Minute)},
		PutPSK{Pair: PSKPair{PID: "ABCD1234", PPS: pps, Site: "b1", Created: t0}, Time: t0},
		UsePSK{PID: "ABCD1234", UUID: "u1", Time: t0},
		LeaseCAS{Lease: Lease{IP: "10.1.0.100", MAC: "02:00:00:00:00:01", ClientID: "c1", Site: "b1", Expires: t0.Add(time.Hour)}, Time: t0},
		LeaseCAS{Lease: Lease{IP: "10.1.0.101", ClientID: "c2", Site: "b1", Expires: t0.Add(time.Minute)}, Time: t0},
		LeaseCAS{Lease: Lease{IP: "10.1.0.102", ClientID: "c3", Site: "b1", Expires: t0.Add(time.Hour)}, Time: t0},
		LeaseBatch{Items: []LeaseCAS{
			{Lease: Lease{IP: "10.1.0.103", ClientID: "c4", Site: "b1", Expires: t0.Add(time.Hour)}, Time: t0},
			{Lease: Lease{IP: "10.1.0.104", ClientID: "c5", Site: "b1", Expires: t0.Add(time.Hour)}, Time: t0},
		}},
		LeaseRelease{IP: "10.1.0.102", ClientID: "c3", Time: t0},
		LeaseExpire{Time: t0.Add(2 * time.Minute)},
		Audit{Entry: AuditEntry{Time: t0, Actor: "test", Action: "site.put", Subject: "b1"}},
		CreateAuthority{Authority: Authority{Name: "management", CertPEM: "-----BEGIN CERTIFICATE-----", Key: key, Created: t0}, Time: t0},
		PutMember{Member: MemberRecord{ID: "box1", Role: RoleVoter, SiteAddrs: map[string][]string{"b1": {"10.1.0.1"}}, Updated: t0}},
	}
}

func TestEveryCommandApplies(t *testing.T) {
	s := NewMemory()
	ctx := context.Background()
	for _, c := range everyCommand(t, s) {
		if err := s.Apply(ctx, c); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}
	if d, ok := s.Device("u1"); !ok || d.State != DeviceActivated || len(d.History) != 2 || d.Site != "b1" {
		t.Errorf("device u1 = %+v", d)
	}
	if _, ok := s.Device("u2"); ok {
		t.Error("deleted device still present")
	}
	ls := slices.Clone(s.Leases())
	SortLeases(ls)
	var ips []string
	for _, l := range ls {
		ips = append(ips, l.IP)
	}
	if want := []string{"10.1.0.100", "10.1.0.103", "10.1.0.104"}; !slices.Equal(ips, want) {
		t.Errorf("leases = %v, want %v (one expired, one released, two batched)", ips, want)
	}
	if a := s.Audit(0); len(a) != 1 || a[0].Seq != 1 {
		t.Errorf("audit = %+v", a)
	}
	if p, _ := s.PSK("ABCD1234"); p.UsedBy != "u1" {
		t.Errorf("psk = %+v", p)
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := NewMemory()
	for _, c := range everyCommand(t, src) {
		if err := src.Apply(context.Background(), c); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}
	snap, err := fsm{src}.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&fakeSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	dst := NewMemory()
	// Restore must discard what was there before.
	dst.Apply(context.Background(), PutSite{Site: Site{Name: "stale", Subnet: "10.8.0.0/24"}})
	if err := (fsm{dst}).Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(src.st)
	got, _ := json.Marshal(dst.st)
	if !bytes.Equal(want, got) {
		t.Errorf("restored state differs:\nwant %s\ngot  %s", want, got)
	}
	if dst.AppliedIndex() != src.AppliedIndex() {
		t.Errorf("applied index %d, want %d", dst.AppliedIndex(), src.AppliedIndex())
	}
	// Every command type must have been exercised by the round trip.
	seen := map[CmdType]bool{}
	for _, c := range everyCommand(t, src) {
		seen[c.Type()&^IgnoreUnknown] = true
	}
	for typ := range commandFactories {
		if !seen[typ] {
			t.Errorf("command type %d not covered", typ)
		}
	}
}

// Persist encodes the state as it was at Snapshot, however much is applied
// in between, including the audit trail and device histories that apply
// trims in place once full.
func TestSnapshotUnaffectedByLaterApplies(t *testing.T) {
	src := NewMemory()
	ctx := context.Background()
	apply := func(c Command) {
		t.Helper()
		if err := src.Apply(ctx, c); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}
	for _, c := range everyCommand(t, src) {
		apply(c)
	}
	churn := func(round int) {
		for i := range auditCap {
			apply(Audit{Entry: AuditEntry{Action: fmt.Sprintf("r%d-%d", round, i)}})
		}
		for i := range historyCap {
			apply(DeviceUpdate{UUID: "u1", Event: DeviceEvent{State: fmt.Sprintf("r%d-%d", round, i)}, Time: t0})
		}
		apply(LeaseCAS{Lease: Lease{IP: fmt.Sprintf("10.9.0.%d", round), ClientID: fmt.Sprint(round), Site: "s", State: LeaseBound, Expires: t0.Add(time.Hour)}, Time: t0})
	}
	churn(1) // both rings full, so the next appends trim in place
	snap, err := fsm{src}.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(src.st)
	churn(2)
	apply(PutSite{Site: Site{Name: "later", Subnet: "10.7.0.0/24"}})

	var buf bytes.Buffer
	if err := snap.Persist(&fakeSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	dst := NewMemory()
	if err := (fsm{dst}).Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(dst.st); !bytes.Equal(want, got) {
		t.Errorf("snapshot changed by later applies:\nwant %.300s\ngot  %.300s", want, got)
	}
}

type fakeSink struct{ *bytes.Buffer }

func (fakeSink) ID() string    { return "test" }
func (fakeSink) Cancel() error { return nil }
func (fakeSink) Close() error  { return nil }

func TestOTPConsumedOnce(t *testing.T) {
	s := NewMemory()
	ctx := context.Background()
	sec, _ := s.Seal([]byte("otp"))
	if err := s.Apply(ctx, CreateOTP{OTP: OTP{UUID: "u", Secret: sec, Created: t0, Expires: t0.Add(time.Hour)}, Time: t0}); err != nil {
		t.Fatal(err)
	}
	consume := ConsumeOTP{UUID: "u", RequestID: "req-1", Time: t0.Add(time.Minute)}
	data, err := encodeCommand(consume)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.applyEntry(10, data).err; err != nil {
		t.Fatalf("first consume: %v", err)
	}
	// The same entry applied again (a retry after a lost leadership
	// answer) is the same consume and succeeds without changing anything.
	if err := s.applyEntry(11, data).err; err != nil {
		t.Fatalf("replayed consume: %v", err)
	}
	err = s.Apply(ctx, ConsumeOTP{UUID: "u", RequestID: "req-2", Time: t0.Add(2 * time.Minute)})
	if !errors.Is(err, ErrConsumed) {
		t.Fatalf("second consume: %v, want ErrConsumed", err)
	}
	if err := s.Apply(ctx, ConsumeOTP{UUID: "u", Time: t0.Add(2 * time.Minute)}); err == nil {
		t.Error("a consume without a request id was accepted")
	}
	if o, _ := s.OTP("u"); o.ConsumedBy != "req-1" {
		t.Errorf("consumed by %q", o.ConsumedBy)
	}
}

func TestOTPExpired(t *testing.T) {
	s := NewMemory()
	ctx := context.Background()
	s.Apply(ctx, CreateOTP{OTP: OTP{UUID: "u", Created: t0, Expires: t0.Add(time.Minute)}, Time: t0})
	if err := s.Apply(ctx, ConsumeOTP{UUID: "u", RequestID: "r", Time: t0.Add(time.Hour)}); !errors.Is(err, ErrExpired) {
		t.Fatalf("got %v, want ErrExpired", err)
	}
}

func TestLeaseCAS(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		before  []LeaseCAS
		cas     LeaseCAS
		wantErr error
	}{
		{"free address", nil, LeaseCAS{Lease: Lease{IP: "10.0.0.5", ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0}, nil},
		{"held by other", []LeaseCAS{{Lease: Lease{IP: "10.0.0.5", ClientID: "b", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0}},
			LeaseCAS{Lease: Lease{IP: "10.0.0.5", ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0}, ErrConflict},
		{"held by other but expired", []LeaseCAS{{Lease: Lease{IP: "10.0.0.5", ClientID: "b", Site: "s", Expires: t0.Add(time.Minute)}, Time: t0}},
			LeaseCAS{Lease: Lease{IP: "10.0.0.5", ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0.Add(time.Hour)}, nil},
		{"renewal by holder", []LeaseCAS{{Lease: Lease{IP: "10.0.0.5", ClientID: "a", Site: "s", Expires: t0.Add(time.Minute)}, Time: t0}},
			LeaseCAS{Lease: Lease{IP: "10.0.0.5", ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0}, nil},
		{"declined address is quarantined", []LeaseCAS{{Lease: Lease{IP: "10.0.0.5", ClientID: "declined", State: LeaseDeclined, Site: "s", Expires: t0.Add(time.Hour)}, Time: t0}},
			LeaseCAS{Lease: Lease{IP: "10.0.0.5", ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0}, ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewMemory()
			for _, b := range tc.before {
				if err := s.Apply(ctx, b); err != nil {
					t.Fatal(err)
				}
			}
			err := s.Apply(ctx, tc.cas)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestLeaseOnePerClientPerSite(t *testing.T) {
	s := NewMemory()
	ctx := context.Background()
	s.Apply(ctx, LeaseCAS{Lease: Lease{IP: "10.0.0.5", ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0})
	s.Apply(ctx, LeaseCAS{Lease: Lease{IP: "10.0.0.6", ClientID: "a", Site: "s", Expires: t0.Add(time.Hour)}, Time: t0})
	if ls := s.Leases(); len(ls) != 1 || ls[0].IP != "10.0.0.6" {
		t.Errorf("leases = %+v", ls)
	}
}

func TestDeviceCoalescing(t *testing.T) {
	s := NewMemory()
	ctx := context.Background()
	start := DeviceUpdate{UUID: "u", State: DeviceActivating, IfStateNot: []string{DeviceActivating, DeviceActivated}, Time: t0}
	if err := s.Apply(ctx, start); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, start); !errors.Is(err, ErrConflict) {
		t.Fatalf("second start: %v, want ErrConflict", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	if _, err := decodeCommand([]byte{0x7f, '{', '}'}); err == nil || errors.Is(err, errSkip) {
		t.Errorf("unknown mandatory command: %v", err)
	}
	if _, err := decodeCommand([]byte{0xff, '{', '}'}); !errors.Is(err, errSkip) {
		t.Errorf("unknown ignorable command: %v", err)
	}
}

func TestSealNeverLeaks(t *testing.T) {
	s := NewMemory()
	v, err := s.Seal([]byte("hunter2-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(v, []byte("hunter2")) {
		t.Fatal("sealed value contains the plaintext")
	}
	p, err := s.Unseal(v)
	if err != nil || string(p) != "hunter2-secret" {
		t.Fatalf("unseal = %q, %v", p, err)
	}
	other := NewMemory()
	if _, err := other.Unseal(v); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("foreign unseal: %v", err)
	}
}

func TestNodePersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func() *Node {
		n, err := Open(Config{ID: "box1", DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := open()
	secret, _ := n.Store.Seal([]byte("TopSecretKeyMaterial"))
	if err := n.Store.Apply(ctx, PutSite{Site: Site{Name: "b1", Subnet: "10.1.0.0/24", CertKey: secret}, Time: t0}); err != nil {
		t.Fatal(err)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := n.Store.Apply(ctx, PutSite{Site: Site{Name: "b2", Subnet: "10.2.0.0/24"}, Time: t0}); err != nil {
		t.Fatal(err)
	}
	if m, err := n.Members(); err != nil || len(m) != 1 || !m[0].Leader {
		t.Fatalf("members = %+v, %v", m, err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = open()
	defer n.Close()
	got := n.Store.Sites()
	if len(got) != 2 || got[0].Name != "b1" || got[1].Name != "b2" {
		t.Fatalf("after restart sites = %+v", got)
	}
	if k, err := n.Store.Unseal(got[0].CertKey); err != nil || string(k) != "TopSecretKeyMaterial" {
		t.Fatalf("unseal after restart: %v", err)
	}
	// Nothing on disk may hold the plaintext secret.
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("TopSecretKeyMaterial")) {
			t.Errorf("%s holds the plaintext secret", p)
		}
		return nil
	})
	if fi, err := os.Stat(filepath.Join(dir, sealKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("seal key mode: %v %v", fi.Mode(), err)
	}
}

func TestWatchSignals(t *testing.T) {
	s := NewMemory()
	all, stop := s.Watch()
	defer stop()
	config, stop2 := s.WatchConfig()
	defer stop2()
	signalled := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	}
	ctx := context.Background()
	s.Apply(ctx, LeaseCAS{Lease: Lease{IP: "10.0.0.5", ClientID: "c", Site: "x", Expires: t0.Add(time.Hour)}, Time: t0})
	if !signalled(all) {
		t.Error("Watch: no signal for a lease")
	}
	if signalled(config) {
		t.Error("WatchConfig: signalled for a lease")
	}
	s.Apply(ctx, PutSite{Site: Site{Name: "x", Subnet: "10.0.0.0/8"}})
	if !signalled(all) || !signalled(config) {
		t.Error("no signal for a site")
	}
}

func TestDeepCopies(t *testing.T) {
	s := NewMemory()
	s.Apply(context.Background(), DeviceUpdate{UUID: "u", Hashes: []string{"a"}, Time: t0})
	d, _ := s.Device("u")
	d.Hashes[0] = "mutated"
	d2, _ := s.Device("u")
	if !reflect.DeepEqual(d2.Hashes, []string{"a"}) {
		t.Error("reader mutation leaked into the store")
	}
}
