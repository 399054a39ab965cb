package main

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

func TestDeviceFlags(t *testing.T) {
	var df deviceFlags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	df.register(fs, true)
	err := fs.Parse([]string{"--amt-version", "3.0", "--custom-root-hash", "742c3192e607e424eb4549542be1bbc53e6174e2",
		"--fault", "slow=1s@2-3", "--fault", "wrong-realm", "--pid-prefix", "ab", "--window", "90s",
		"--setup-mode=false", "--local-password", "Local-Pass-1"})
	if err != nil {
		t.Fatal(err)
	}
	var u hello.UUID
	c1, err := df.config(1, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	c3, err := df.config(3, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Faults.Slow != 0 || c3.Faults.Slow != time.Second || !c1.Faults.WrongRealm || !c3.Faults.WrongRealm {
		t.Fatalf("faults: %+v / %+v", c1.Faults, c3.Faults)
	}
	if c3.PID != "AB000003" || c1.Profile.Name != "3.0" || c1.FirstWindow != 90*time.Second || len(c1.CustomHashes) != 1 ||
		c1.SetupMode || c3.LocalPassword != "Local-Pass-1" {
		t.Fatalf("config: %+v", c3)
	}
	for _, bad := range [][]string{{"--fault", "nope"}, {"--custom-root-hash", "abcd"}} {
		var d deviceFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		d.register(fs, false)
		if err := fs.Parse(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	for list, want := range map[string]bool{"": true, "all": true, "1,3-5": true, "1,4-5": false, "2": false} {
		if got, err := inList(list, 3); err != nil || got != want {
			t.Errorf("inList(%q, 3) = %v, %v", list, got, err)
		}
	}
}

func TestUUIDList(t *testing.T) {
	var l uuidList
	if err := l.Set("12345678-9abc-def0-1122-334455667788"); err != nil {
		t.Fatal(err)
	}
	if err := l.Set("not-a-uuid"); err == nil {
		t.Error("a malformed UUID was accepted")
	}
	if got := l.pick(1).String(); got != "12345678-9abc-def0-1122-334455667788" {
		t.Errorf("device 1 got %s", got)
	}
	if a, b := l.pick(2), l.pick(3); a == b || a == l[0] {
		t.Error("devices past the list must get distinct random UUIDs")
	}
}
