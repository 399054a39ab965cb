package device

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"testing"
	"time"

	"github.com/branchbox/branchbox/tests/amtsim/certgen"
	"github.com/branchbox/branchbox/tests/amtsim/firmware"
	"github.com/branchbox/branchbox/tests/amtsim/hello"
)

func newDevice(t *testing.T, version string, setupMode bool, root []byte, mod func(*Config)) *Device {
	t.Helper()
	p, err := firmware.Lookup(version)
	if err != nil {
		t.Fatal(err)
	}
	uuid, _ := hello.ParseUUID("12345678-9abc-def0-1122-334455667788")
	cfg := Config{UUID: uuid, Profile: p, DNSSuffix: "example.com", SetupMode: setupMode}
	if root != nil {
		cfg.CustomHashes = []CustomHash{{Name: "test", Alg: hello.SHA256, Sum: firmware.Digest(hello.SHA256, root)}}
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func testChain(t *testing.T, cn string) *certgen.Chain {
	t.Helper()
	c, err := certgen.Build(certgen.Leaf(cn), certgen.CA("Issuing CA"), certgen.CA("Root CA"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func inject(t *testing.T, d *Device, c *certgen.Chain) {
	t.Helper()
	for i, x := range c.Certs {
		if rv := d.AddNextCertInChain(base64.StdEncoding.EncodeToString(x.Raw), i == 0, i == len(c.Certs)-1); rv != CertSuccess {
			t.Fatalf("AddNextCertInChain %d: %d", i, rv)
		}
	}
}

func sign(t *testing.T, key crypto.Signer, fwNonce, mcNonce []byte) string {
	t.Helper()
	sum := sha256.Sum256(append(append([]byte(nil), fwNonce...), mcNonce...))
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func TestAdminSetupSignature(t *testing.T) {
	chain := testChain(t, "prov.example.com")
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	mc := make([]byte, 20)
	_, _ = rand.Read(mc)
	ha1 := hex.EncodeToString(HA1("admin", "Digest:X", "P@ssw0rd1"))
	tests := []struct {
		name string
		sig  func(fw []byte) string
		want int
	}{
		{"correct", func(fw []byte) string { return sign(t, chain.Keys[0], fw, mc) }, HBSSuccess},
		{"wrong nonce", func(fw []byte) string { return sign(t, chain.Keys[0], make([]byte, 20), mc) }, HBSAuthFailed},
		{"nonces swapped", func(fw []byte) string { return sign(t, chain.Keys[0], mc, fw) }, HBSAuthFailed},
		{"wrong key", func(fw []byte) string { return sign(t, otherKey, fw, mc) }, HBSAuthFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, "16", false, chain.Root().Raw, nil)
			inject(t, d, chain)
			fw, _ := base64.StdEncoding.DecodeString(d.GetHostBasedSetup().ConfigurationNonce)
			rv := d.AdminSetup(2, ha1, base64.StdEncoding.EncodeToString(mc), 2, tc.sig(fw))
			if rv != tc.want {
				t.Fatalf("AdminSetup = %d, want %d (%s)", rv, tc.want, d.Status().LastError)
			}
			st, mode := d.State()
			if (rv == HBSSuccess) != (st == PostProvisioning && mode == ModeAdmin) {
				t.Fatalf("state %s/%s after %d", st, mode, rv)
			}
		})
	}
}

func TestAdminSetupPreconditions(t *testing.T) {
	chain := testChain(t, "prov.example.com")
	mc := make([]byte, 20)
	signed := func(d *Device) string {
		fw, _ := base64.StdEncoding.DecodeString(d.GetHostBasedSetup().ConfigurationNonce)
		return sign(t, chain.Keys[0], fw, mc)
	}
	ha1 := hex.EncodeToString(make([]byte, 16))
	mcB64 := base64.StdEncoding.EncodeToString(mc)

	d := newDevice(t, "16", false, chain.Root().Raw, nil)
	if rv := d.AdminSetup(2, ha1, mcB64, 2, signed(d)); rv != HBSInvalidState {
		t.Fatalf("without chain: %d", rv)
	}
	inject(t, d, chain)
	if rv := d.AdminSetup(2, ha1, base64.StdEncoding.EncodeToString(mc[:16]), 2, signed(d)); rv != HBSInvalidParam {
		t.Fatalf("16-byte McNonce: %d", rv)
	}
	if rv := d.AdminSetup(2, ha1, mcB64, 1, signed(d)); rv != HBSInvalidParam {
		t.Fatalf("signing algorithm 1: %d", rv)
	}
	if rv := d.AdminSetup(2, "nothex", mcB64, 2, signed(d)); rv != HBSInvalidParam {
		t.Fatalf("bad password hash: %d", rv)
	}

	// Certificate for another domain: the signature is fine, the domain is not.
	other := testChain(t, "prov.other.com")
	d2 := newDevice(t, "16", false, other.Root().Raw, nil)
	inject(t, d2, other)
	fw, _ := base64.StdEncoding.DecodeString(d2.GetHostBasedSetup().ConfigurationNonce)
	if rv := d2.AdminSetup(2, ha1, mcB64, 2, sign(t, other.Keys[0], fw, mc)); rv != HBSAuthFailed {
		t.Fatalf("foreign domain: %d", rv)
	}

	// In setup mode (hello window open) host-based ACM is refused.
	d3 := newDevice(t, "16", true, chain.Root().Raw, nil)
	if rv := d3.AddNextCertInChain(base64.StdEncoding.EncodeToString(chain.Certs[0].Raw), true, false); rv != CertInvalidState {
		t.Fatalf("AddNextCertInChain in setup mode: %d", rv)
	}
	if rv := d3.AdminSetup(2, ha1, mcB64, 2, signed(d3)); rv != HBSInvalidState {
		t.Fatalf("AdminSetup in setup mode: %d", rv)
	}

	// 3.0 has no host-based setup.
	d4 := newDevice(t, "3.0", false, nil, nil)
	if rv := d4.Setup(2, ha1); rv != HBSInvalidState {
		t.Fatalf("Setup on 3.0: %d", rv)
	}
}

func TestAddNextCertInChainCodes(t *testing.T) {
	chain := testChain(t, "prov.example.com")
	b64 := func(i int) string { return base64.StdEncoding.EncodeToString(chain.Certs[i].Raw) }
	long, err := certgen.Build(certgen.Leaf("h.example.com"), certgen.CA("I1"), certgen.CA("I2"), certgen.CA("I3"), certgen.CA("R"))
	if err != nil {
		t.Fatal(err)
	}

	d := newDevice(t, "16", false, chain.Root().Raw, nil)
	if rv := d.AddNextCertInChain("!!", true, false); rv != CertInvalidParam {
		t.Fatalf("garbage: %d", rv)
	}
	if rv := d.AddNextCertInChain(b64(1), false, false); rv != CertInvalidParam {
		t.Fatalf("no leaf first: %d", rv)
	}
	if rv := d.AddNextCertInChain(b64(0), true, false); rv != CertSuccess {
		t.Fatalf("leaf: %d", rv)
	}
	if rv := d.AddNextCertInChain(b64(2), false, true); rv != CertVerifyFailed {
		t.Fatalf("root out of order: %d", rv)
	}
	if got := d.GetHostBasedSetup().CertChainStatus; got != ChainNotStarted {
		t.Fatalf("chain status after failure: %d", got)
	}
	for i := 0; i < 4; i++ {
		if rv := d.AddNextCertInChain(base64.StdEncoding.EncodeToString(long.Certs[i].Raw), i == 0, false); rv != CertSuccess {
			t.Fatalf("long chain cert %d: %d", i, rv)
		}
	}
	if rv := d.AddNextCertInChain(base64.StdEncoding.EncodeToString(long.Certs[4].Raw), false, true); rv != CertChainLengthExceeded {
		t.Fatalf("fifth cert: %d", rv)
	}
	// A well-formed chain whose root is not trusted fails at the root.
	d2 := newDevice(t, "16", false, nil, nil)
	for i := range chain.Certs {
		rv := d2.AddNextCertInChain(b64(i), i == 0, i == 2)
		if i < 2 && rv != CertSuccess || i == 2 && rv != CertVerifyFailed {
			t.Fatalf("untrusted root, cert %d: %d", i, rv)
		}
	}
}

func TestRemoteConfigurationCommit(t *testing.T) {
	d := newDevice(t, "16", true, nil, func(c *Config) { c.OTP = "otp-1234" })
	if !d.WindowOpen() || !d.NeedsClientChain() {
		t.Fatal("fresh device not in setup mode")
	}
	if got := d.GetSetupService().OTPBase64; got != base64.StdEncoding.EncodeToString([]byte("otp-1234")) {
		t.Fatalf("OTP %q", got)
	}
	if rv := d.CommitChanges(); rv != PTDataMissing {
		t.Fatalf("commit with default MEBx: %d", rv)
	}
	if rv := d.SetMEBxPassword("short"); rv != PTInvalidPassword {
		t.Fatalf("weak MEBx: %d", rv)
	}
	if rv := d.SetMEBxPassword("Mebx-Pass1"); rv != PTSuccess {
		t.Fatalf("MEBx: %d", rv)
	}
	realm := d.GetGeneralSettings().DigestRealm
	ha1 := HA1("admin", realm, "Adm1n-Pass!")
	// MeshCentral's hex form and RPS's base64 form both set the digest.
	if rv := d.SetAdminAclEntryEx("admin", hex.EncodeToString(ha1)); rv != PTSuccess {
		t.Fatalf("hex digest password: %d", rv)
	}
	if rv := d.SetAdminAclEntryEx("admin", "not-a-digest"); rv != PTInvalidParameter {
		t.Fatalf("garbage digest password: %d", rv)
	}
	if rv := d.SetAdminAclEntryEx("admin", base64.StdEncoding.EncodeToString(ha1)); rv != PTSuccess {
		t.Fatalf("admin ACL: %d", rv)
	}
	if rv := d.ExtendProvisioningPeriod(25); rv != PTInvalidParameter {
		t.Fatalf("extend 25h: %d", rv)
	}
	if rv := d.ExtendProvisioningPeriod(6); rv != PTSuccess {
		t.Fatalf("extend 6h: %d", rv)
	}
	ta0, rv := d.GetLowAccuracyTimeSynch()
	if rv != PTSuccess {
		t.Fatal(rv)
	}
	if rv := d.SetHighAccuracyTimeSynch(ta0+1, ta0, ta0); rv != PTInvalidParameter {
		t.Fatalf("wrong Ta0: %d", rv)
	}
	if rv := d.SetHighAccuracyTimeSynch(ta0, ta0+100, ta0+100); rv != PTSuccess {
		t.Fatalf("time sync: %d", rv)
	}
	if off := d.ClockOffset(); off < 98*time.Second || off > 101*time.Second {
		t.Fatalf("clock offset %v after setting the clock 100 s ahead", off)
	}
	if rv := d.CommitChanges(); rv != PTSuccess {
		t.Fatalf("commit: %d", rv)
	}
	st, mode := d.State()
	if st != PostProvisioning || mode != ModeAdmin {
		t.Fatalf("after commit %s/%s", st, mode)
	}
	required, users := d.Credentials(Remote)
	if !required || string(users["admin"]) != string(ha1) {
		t.Fatal("post-provisioning remote access does not demand the new admin secret")
	}
	if rv := d.Unprovision(3); rv != PTInvalidParameter {
		t.Fatalf("unprovision mode 3: %d", rv)
	}
	if rv := d.Unprovision(1); rv != PTSuccess {
		t.Fatalf("unprovision: %d", rv)
	}
	if st, mode := d.State(); st != InProvisioning || mode != ModeNone || !d.WindowOpen() {
		t.Fatalf("after unprovision %s/%s", st, mode)
	}
}

func TestCCMThenUpgrade(t *testing.T) {
	chain := testChain(t, "prov.example.com")
	d := newDevice(t, "11.8", false, chain.Root().Raw, nil)
	ha1 := hex.EncodeToString(HA1("admin", d.Realm(), "Adm1n-Pass!"))
	if rv := d.Setup(1, ha1); rv != HBSInvalidParam {
		t.Fatalf("Setup enc type 1: %d", rv)
	}
	if rv := d.Setup(2, ha1); rv != HBSSuccess {
		t.Fatalf("Setup: %d", rv)
	}
	if rv := d.SetMEBxPassword("Mebx-Pass1"); rv != PTNotPermitted {
		t.Fatalf("MEBx in CCM: %d", rv)
	}
	inject(t, d, chain)
	mc := make([]byte, 20)
	fw, _ := base64.StdEncoding.DecodeString(d.GetHostBasedSetup().ConfigurationNonce)
	if rv := d.UpgradeClientToAdmin(base64.StdEncoding.EncodeToString(mc), 2, sign(t, chain.Keys[0], fw, mc)); rv != HBSSuccess {
		t.Fatalf("upgrade: %d (%s)", rv, d.Status().LastError)
	}
	if _, mode := d.State(); mode != ModeAdmin {
		t.Fatalf("mode %s", mode)
	}
}

func TestFaults(t *testing.T) {
	d := newDevice(t, "16", true, nil, func(c *Config) {
		c.Faults = Faults{WrongRealm: true, WindowExpired: true, ResetAtRequest: 2}
	})
	if d.ReportedRealm() == d.Realm() {
		t.Fatal("wrong-realm fault reports the true realm")
	}
	if d.WindowOpen() || d.RemoteReachable() {
		t.Fatal("expired window is open")
	}
	if d.ConsumeReset(1) || !d.ConsumeReset(2) || d.ConsumeReset(2) {
		t.Fatal("reset fault must fire once, at request 2")
	}
	root := testChain(t, "x.example.com").Root().Raw
	d2 := newDevice(t, "16", true, root, func(c *Config) { c.Faults.HashInactive = true })
	p, _ := d2.Hello(0)
	if len(p.Hashes) != 23 {
		t.Fatalf("inactive custom hash is in the hello: %d hashes", len(p.Hashes))
	}
}

func TestApplyFault(t *testing.T) {
	var f Faults
	for _, s := range []string{"drop-commit-response", "wrong-realm", "expired-window", "hash-inactive", "slow=2s", "reset-at=3", "reboot-during-activation=5s"} {
		if err := f.ApplyFault(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	want := Faults{DropResponseAfterCommit: true, WrongRealm: true, WindowExpired: true, HashInactive: true,
		Slow: 2e9, ResetAtRequest: 3, RebootDuringActivation: true, RebootDowntime: 5e9}
	if f != want {
		t.Fatalf("%+v", f)
	}
	for _, s := range []string{"bogus", "slow=fast", "reset-at=0", "wrong-realm=1"} {
		if err := f.ApplyFault(s); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
}
