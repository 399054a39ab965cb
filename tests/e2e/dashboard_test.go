package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboard drives the dashboard in headless Chromium against a lab
// appliance: it signs in with the API token, watches a fleet of simulated
// devices move from seen through activating to activated without a reload,
// imports an inventory file, checks the site's certificate status, and
// leaves screenshots in tests/e2e/out/.
func TestDashboard(t *testing.T) {
	browser := chromium(t)
	site := &labSite{Name: "dash", Octet: 86, Domain: "branch6.e2e.example"}
	l := newLab(t, "", site)
	base := forward(t, l.app, "127.0.0.1:18443")
	token, err := os.ReadFile(filepath.Join(l.dir, "data", "api.token"))
	if err != nil {
		t.Fatal(err)
	}
	shots, err := filepath.Abs("out")
	if err == nil {
		err = os.MkdirAll(shots, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}

	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1400, 900),
			chromedp.Flag("disable-dev-shm-usage", true))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			path := filepath.Join(shots, "dashboard-"+name+".png")
			t.Logf("screenshot %s", path)
			return os.WriteFile(path, png, 0o644)
		})
	}
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	xpath := func(s string) chromedp.Search { return chromedp.Search(s) }

	// Sign in: a wrong token is refused, the right one opens the dashboard.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(id("token")),
		shot("login"),
		chromedp.SendKeys(id("token"), "not-the-token"),
		chromedp.Click(id("login-submit")),
		chromedp.WaitVisible(id("login-failed")),
		chromedp.SendKeys(id("token"), strings.TrimSpace(string(token))),
		chromedp.Click(id("login-submit")),
		chromedp.WaitVisible(id("devices")),
		chromedp.WaitVisible(xpath(`//span[@id="live" and text()="live"]`)),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	// Record every state each device row shows, as the page renders it.
	const recorder = `window.__states = {};
new MutationObserver(() => document.querySelectorAll("#devices tbody tr").forEach((tr) => {
  const s = window.__states[tr.id] = window.__states[tr.id] || [];
  if (s[s.length - 1] !== tr.dataset.state) s.push(tr.dataset.state);
})).observe(document.querySelector("#devices tbody"), {childList: true, subtree: true});
true`
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](recorder)); err != nil {
		t.Fatal(err)
	}

	const count = 6
	l.startFleet("dash", count, true)
	var activated string
	deadline := time.Now().Add(3 * time.Minute)
	for shotTaken := false; activated != fmt.Sprint(count); {
		if time.Now().After(deadline) {
			chromedp.Do(ctx, shot("timeout"))
			t.Fatalf("dashboard shows %s of %d activated", activated, count)
		}
		if activated, err = chromedp.Run(ctx, chromedp.Text(id("count-activated"))); err != nil {
			t.Fatal(err)
		}
		if activated != "0" && !shotTaken {
			chromedp.Do(ctx, shot("activating"))
			shotTaken = true
		}
		time.Sleep(200 * time.Millisecond)
	}
	states, err := chromedp.Run(ctx, chromedp.Evaluate[map[string][]string](`window.__states`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, shot("activated")); err != nil {
		t.Fatal(err)
	}
	live := 0
	for row, seq := range states {
		joined := strings.Join(seq, ">")
		if seq[len(seq)-1] != "activated" {
			t.Errorf("%s ended %s", row, joined)
		}
		if strings.Contains(joined, "activating>activated") {
			live++
		}
	}
	if len(states) != count || live == 0 {
		t.Errorf("rows seen changing live: %v", states)
	}
	t.Logf("state sequences seen in the page: %v", states)

	// Import an inventory file through the file input.
	csv := filepath.Join(l.dir, "inventory.csv")
	var rows strings.Builder
	rows.WriteString("uuid,hostname,site,profile\n")
	for i := 1; i <= 120; i++ {
		fmt.Fprintf(&rows, "aaaaaaaa-0000-4000-8000-%012d,desk-%03d,dash,e2e\n", i, i)
	}
	writeFile(t, csv, rows.String(), 0o644)
	if err := chromedp.Do(ctx,
		chromedp.SetUploadFiles(id("inventory-file"), []string{csv}),
		chromedp.WaitVisible(xpath(`//span[@id="inventory-status" and text()="imported 120 device(s)"]`)),
		chromedp.WaitVisible(xpath(`//tr[@id="dev-aaaaaaaa-0000-4000-8000-000000000120"]`)),
		shot("inventory"),
	); err != nil {
		status, _ := chromedp.Run(ctx, chromedp.Text(id("inventory-status")))
		t.Fatalf("inventory import: %v (status %q)", err, status)
	}
	var d deviceDetail
	l.ctl(&d, "devices", "show", "aaaaaaaa-0000-4000-8000-000000000007")
	if len(d.History) == 0 || !strings.Contains(d.History[0].Detail, "desk-007") {
		t.Errorf("imported device: %+v", d)
	}

	// The site's certificate: every rule passes.
	if err := chromedp.Do(ctx,
		chromedp.Click(xpath(`//nav/button[@data-tab="sites"]`)),
		chromedp.WaitVisible(xpath(`//tr[@id="site-dash"]/td[@class="cert" and text()="passes every rule"]`)),
		shot("sites"),
	); err != nil {
		t.Fatalf("sites tab: %v", err)
	}
}

// chromium finds the browser `make deps` installs (Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	RequireRoot(t)
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: install the Debian package chromium (make deps)")
	return ""
}

// forward listens on the host's loopback and carries each connection into
// ns, to target on its loopback, so a browser outside the namespace reaches
// the appliance's API there. The dial happens on the namespace's thread.
func forward(t *testing.T, ns *NS, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var up net.Conn
				if err := ns.Do(func() (err error) {
					up, err = net.DialTimeout("tcp", target, 5*time.Second)
					return err
				}); err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}
