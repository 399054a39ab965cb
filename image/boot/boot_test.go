package boot

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	cases := []struct {
		in      string
		want    Cmdline
		wantErr string
	}{
		{in: "console=ttyS0 quiet", want: Cmdline{}},
		{in: "quiet branchbox.ip=10.0.0.2/24 branchbox.gw=10.0.0.1 branchbox.node=pair-a",
			want: Cmdline{IP: netip.MustParsePrefix("10.0.0.2/24"), Gateway: netip.MustParseAddr("10.0.0.1"), Node: "pair-a"}},
		{in: `branchbox.node="box1"`, want: Cmdline{Node: "box1"}},
		{in: "branchbox.ip=10.0.0.2", wantErr: "branchbox.ip=10.0.0.2: want an IPv4 ADDR/PREFIX"},
		{in: "branchbox.ip=fd00::1/64", wantErr: "want an IPv4 ADDR/PREFIX"},
		{in: "branchbox.gw=gateway", wantErr: "branchbox.gw=gateway: want an IPv4 address"},
		{in: "branchbox.node=-bad branchbox.ip=10.0.0.2/24", want: Cmdline{IP: netip.MustParsePrefix("10.0.0.2/24")}, wantErr: "branchbox.node=-bad"},
		{in: "branchbox.addr=1", wantErr: "branchbox.addr: unknown"},
	}
	for _, tc := range cases {
		got, errs := ParseCmdline(tc.in)
		if got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
		if (tc.wantErr == "") != (len(errs) == 0) || (len(errs) > 0 && !strings.Contains(errs[0].Error(), tc.wantErr)) {
			t.Errorf("%q: errors %v, want one containing %q", tc.in, errs, tc.wantErr)
		}
	}
}

func TestParseNetwork(t *testing.T) {
	cases := []struct {
		in      string
		want    []Iface
		wantErr string
	}{
		{in: "# lab box\n\neth0 10.0.0.2/24   # LAN\neth1 192.0.2.5/28 192.0.2.1\n", want: []Iface{
			{Name: "eth0", Addr: netip.MustParsePrefix("10.0.0.2/24")},
			{Name: "eth1", Addr: netip.MustParsePrefix("192.0.2.5/28"), Gateway: netip.MustParseAddr("192.0.2.1")},
		}},
		{in: "eth0\n", wantErr: "network.conf line 1: want NAME ADDR/PREFIX [GATEWAY]"},
		{in: "eth0 10.0.0.2\n", wantErr: "line 1: 10.0.0.2: want an IPv4 ADDR/PREFIX"},
		{in: "eth0 10.0.0.2/24 10.9.0.1\n", wantErr: "gateway 10.9.0.1 is not on 10.0.0.0/24"},
		{in: "eth0 10.0.0.2/24\neth0 10.0.0.3/24\n", wantErr: "line 2: interface eth0 is already addressed"},
	}
	for _, tc := range cases {
		got, err := ParseNetwork([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slicesEqual(got, tc.want) {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestWithCmdline(t *testing.T) {
	file := []Iface{{Name: "eth1", Addr: netip.MustParsePrefix("10.1.0.1/24")}, {Name: "eth0", Addr: netip.MustParsePrefix("10.0.0.2/24")}}
	got := WithCmdline(file, Cmdline{IP: netip.MustParsePrefix("10.0.0.9/24"), Gateway: netip.MustParseAddr("10.0.0.1")})
	want := []Iface{file[0], {Name: "eth0", Addr: netip.MustParsePrefix("10.0.0.9/24"), Gateway: netip.MustParseAddr("10.0.0.1")}}
	if !slicesEqual(got, want) || file[1].Addr.String() != "10.0.0.2/24" {
		t.Errorf("override: %+v (file now %+v)", got, file)
	}
	if got := WithCmdline(nil, Cmdline{IP: netip.MustParsePrefix("10.0.0.9/24")}); len(got) != 1 || got[0].Name != "eth0" {
		t.Errorf("no file: %+v, want eth0 added", got)
	}
}

func slicesEqual(a, b []Iface) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOverride(t *testing.T) {
	cases := []struct {
		name, in string
		o        Overrides
		want     []string // lines the result must hold
		was      Overrides
		wantErr  string
	}{
		{name: "replaces", in: "# box\nnode:\n  id: box1 # the id\n  data_dir: /var/lib/branchbox\ndns:\n  listen: \":53\"\n",
			o: Overrides{NodeID: "pair-a", DataDir: "/mnt/vda/branchbox-data"}, was: Overrides{NodeID: "box1", DataDir: "/var/lib/branchbox"},
			want: []string{"# box", "  id: pair-a", "  data_dir: /mnt/vda/branchbox-data", `  listen: ":53"`}},
		{name: "keeps the id", in: "node:\n  id: box1\n", o: Overrides{DataDir: "/d"}, was: Overrides{},
			want: []string{"  id: box1", "  data_dir: /d"}},
		{name: "no node section", in: "dns:\n  listen: \":53\"\n", o: Overrides{DataDir: "/d"},
			want: []string{"node:", "  data_dir: /d"}},
		{name: "empty file", in: "", o: Overrides{DataDir: "/d"}, want: []string{"node:", "  data_dir: /d"}},
		{name: "node not a mapping", in: "node: 3\n", o: Overrides{DataDir: "/d"}, wantErr: "node is not a mapping"},
		{name: "not yaml", in: "node: [\n", o: Overrides{DataDir: "/d"}, wantErr: "branchbox.yaml:"},
	}
	for _, tc := range cases {
		out, was, err := Override([]byte(tc.in), tc.o)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, l := range tc.want {
			if !strings.Contains(string(out), l+"\n") && !strings.Contains(string(out), l+" ") {
				t.Errorf("%s: no line %q in\n%s", tc.name, l, out)
			}
		}
		if was != tc.was {
			t.Errorf("%s: replaced %+v, want %+v", tc.name, was, tc.was)
		}
	}
}

func TestCopyConfigTree(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	for path, body := range map[string]string{
		"branchbox.yaml": "node: {}\n", "ca/chain.pem": "chain", "admin.pass": "pw",
		"branchbox-data/raft/log": "state", "lost+found/x": "junk",
	} {
		os.MkdirAll(filepath.Join(src, filepath.Dir(path)), 0o755)
		os.WriteFile(filepath.Join(src, path), []byte(body), 0o600)
	}
	if err := CopyConfigTree(src, dst); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"branchbox.yaml": true, "ca/chain.pem": true, "admin.pass": true, "branchbox-data": false, "lost+found": false} {
		if _, err := os.Stat(filepath.Join(dst, path)); (err == nil) != want {
			t.Errorf("%s copied: %v, want %v", path, err == nil, want)
		}
	}
	if st, _ := os.Stat(filepath.Join(dst, "admin.pass")); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("admin.pass mode not kept: %v", st)
	}
}

func TestSupervisorRestarts(t *testing.T) {
	var starts atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Supervisor{
		// Each run dies at once, as a crashing branchbox would.
		Command: func() *exec.Cmd { return exec.Command("sh", "-c", "exit 3") },
		Started: func(_ context.Context, run int, _ <-chan struct{}) {
			if starts.Add(1) == 3 {
				cancel()
			}
		},
		MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, StableAfter: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("supervisor did not restart the program three times")
	}
	if n := starts.Load(); n < 3 {
		t.Errorf("%d starts, want 3", n)
	}
}

func TestSupervisorStopKillsRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var cmd *exec.Cmd
	s := &Supervisor{
		Command:    func() *exec.Cmd { cmd = exec.Command("sleep", "60"); return cmd },
		Started:    func(runCtx context.Context, run int, _ <-chan struct{}) { cancel() },
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, StableAfter: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if cmd.ProcessState == nil {
		t.Error("the running program was not waited for")
	}
}

func TestBanner(t *testing.T) {
	var b strings.Builder
	st := Status{Node: "box1", Version: "1.2.3", Role: "leader", Leader: "box1"}
	Banner{Status: st, Sites: []Site{{Name: "b1", Domain: "b1.example", Interface: "eth0", Subnet: "10.0.0.0/24"}, {Name: "b2", Domain: "b2.example", Relay: true, Subnet: "10.2.0.0/24"}},
		Addresses: map[string][]string{"eth0": {"10.0.0.1/24"}}, Uptime: 3.456, Run: 2, Config: "vda:/branchbox.yaml (ext4)", Data: "/mnt/vda/branchbox-data (persistent, on vda)"}.Write(&b)
	for _, want := range []string{"branchbox ready: version 1.2.3, up 3.46s (restart 1)", "node       box1", "raft       role leader, leader box1",
		"addresses  eth0   10.0.0.1/24", "sites      b1  b1.example  10.0.0.0/24 on eth0", "b2  b2.example  10.2.0.0/24 on relay", "persistent, on vda"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}

	b.Reset()
	st = Status{Node: "w1", Version: "1.2.3", Role: "follower", Leader: "box1", Services: map[string]struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	}{"dhcp": {true, "not run on a witness"}}}
	Banner{Status: st, Member: "witness"}.Write(&b)
	for _, want := range []string{"member     witness: raft only", "raft       role follower, leader box1", "services   none: a witness runs raft only"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("witness banner lacks %q:\n%s", want, b.String())
		}
	}
}

func TestMember(t *testing.T) {
	for in, want := range map[string]string{
		"node: {id: a}": "single",
		"node: {cluster: {raft: '10.0.0.1:7000'}}":    "voter",
		"node: {cluster: {role: voter}}":              "voter",
		"node: {cluster: {role: witness, join: [x]}}": "witness",
		"not: [yaml": "single",
	} {
		if got := Member([]byte(in)); got != want {
			t.Errorf("Member(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWatchWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		seen   bool
	}{
		{"one write", []string{"a\nmsg=\"branchbox ready\" node=x\n"}, true},
		{"split", []string{"msg=\"branch", "box re", "ady\"\n"}, true},
		{"byte by byte", strings.Split(`x msg="branchbox ready"`, ""), true},
		{"absent", []string{"msg=\"branchbox starting\"\n", "ready\n"}, false},
		{"twice", []string{`msg="branchbox ready"`, `msg="branchbox ready"`}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			seen := make(chan struct{})
			w := &watchWriter{w: &out, marker: []byte(`msg="branchbox ready"`), seen: seen}
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			select {
			case <-seen:
				if !tc.seen {
					t.Error("marker reported but never written")
				}
			default:
				if tc.seen {
					t.Error("marker written but not reported")
				}
			}
			if out.String() != strings.Join(tc.writes, "") {
				t.Errorf("passed on %q, want everything written", out.String())
			}
		})
	}
}

func TestSupervisorReadyLine(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mark := filepath.Join(t.TempDir(), "wrote")
	var early atomic.Bool
	s := &Supervisor{
		Command: func() *exec.Cmd {
			return exec.Command("sh", "-c", `echo starting >&2; sleep 0.2; touch "$0"; echo 'msg="ready" x=1' >&2; exec sleep 60`, mark)
		},
		ReadyLine: `msg="ready"`,
		Started: func(_ context.Context, _ int, ready <-chan struct{}) {
			<-ready
			_, err := os.Stat(mark)
			early.Store(err != nil)
			cancel()
		},
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, StableAfter: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ready never reported")
	}
	if early.Load() {
		t.Error("ready reported before the program wrote the line")
	}
}
