package appliance

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
)

func parseConfig(t *testing.T, dir, yml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSyncConfigWritesOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "admin.pass"), []byte("Str0ng!Passw0rd\n"), 0o600)
	st := cluster.NewMemory()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	two := `
profiles: [{name: std, admin_password_file: admin.pass}]
sites:
  - {name: a, domain: a.example.com, interface: e1, subnet: 10.1.0.0/24, range: [10.1.0.10, 10.1.0.20], profile: std}
  - {name: b, domain: b.example.com, interface: e2, subnet: 10.2.0.0/24, range: [10.2.0.10, 10.2.0.20]}
`
	if err := syncConfig(ctx, st, parseConfig(t, dir, two), log); err != nil {
		t.Fatal(err)
	}
	// An API-made site must survive config syncs.
	st.Apply(ctx, cluster.PutSite{Site: cluster.Site{Name: "api", Subnet: "10.3.0.0/24", Source: "api"}})
	changes, stop := st.Watch()
	defer stop()
	if err := syncConfig(ctx, st, parseConfig(t, dir, two), log); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
		t.Error("an unchanged config wrote to the store (sealed secrets must compare by plaintext)")
	default:
	}
	one := `
profiles: [{name: std, admin_password_file: admin.pass}]
sites:
  - {name: a, domain: a.example.com, interface: e1, subnet: 10.1.0.0/24, range: [10.1.0.10, 10.1.0.30], profile: std}
`
	if err := syncConfig(ctx, st, parseConfig(t, dir, one), log); err != nil {
		t.Fatal(err)
	}
	sites := st.Sites()
	if len(sites) != 2 || sites[0].Name != "a" || sites[0].RangeEnd != "10.1.0.30" || sites[1].Name != "api" {
		t.Fatalf("sites after sync: %+v", sites)
	}
	p, _ := st.Profile("std")
	if pw, err := st.Unseal(p.AdminPassword); err != nil || string(pw) != "Str0ng!Passw0rd" {
		t.Fatalf("profile password: %q %v", pw, err)
	}
}

func TestSyncConfigSealsAgentToken(t *testing.T) {
	dir := t.TempDir()
	const token = "agent-token-0123456789abcdef"
	os.WriteFile(filepath.Join(dir, "agent.token"), []byte(token+"\n"), 0o600)
	st := cluster.NewMemory()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	yml := "sites: [{name: a, domain: a.example.com, interface: e1, subnet: 10.1.0.0/24, range: [10.1.0.10, 10.1.0.20], agent_token_file: agent.token}]"
	if err := syncConfig(ctx, st, parseConfig(t, dir, yml), log); err != nil {
		t.Fatal(err)
	}
	s, _ := st.Site("a")
	if bytes.Contains(s.AgentToken, []byte(token)) {
		t.Fatal("the agent token is stored in the clear")
	}
	if got, err := st.Unseal(s.AgentToken); err != nil || string(got) != token {
		t.Fatalf("agent token unsealed to %q, %v", got, err)
	}
	changes, stop := st.Watch()
	defer stop()
	if err := syncConfig(ctx, st, parseConfig(t, dir, yml), log); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
		t.Error("an unchanged agent token was written again")
	default:
	}
	os.WriteFile(filepath.Join(dir, "agent.token"), []byte("another-token-0123456789abc"), 0o600)
	if err := syncConfig(ctx, st, parseConfig(t, dir, yml), log); err != nil {
		t.Fatal(err)
	}
	s, _ = st.Site("a")
	if got, _ := st.Unseal(s.AgentToken); string(got) != "another-token-0123456789abc" {
		t.Errorf("a changed token file was not applied: %q", got)
	}
}
