package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/branchbox/branchbox/appliance"
	"github.com/branchbox/branchbox/appliance/api"
	"github.com/branchbox/branchbox/appliance/apiclient"
	"github.com/branchbox/branchbox/appliance/config"
	"github.com/branchbox/branchbox/cluster"
)

const ctlUsage = `usage: branchbox ctl [--config FILE] [--output json|table] COMMAND

commands:
  status                                 this node: version, raft role, leader, service health
  cluster status                         members, one per line; the leader is marked "leader"
  cluster token                          the join token new members need (read from data_dir)
  cluster join ADDR... --token T         before this box's first start (needs --config with
                                         node.cluster): be admitted by a member at ADDR
  cluster leave [--force]                take this box out of the cluster
  cluster remove ID [--force]            take member ID out (a dead box)
  devices [--state S] [--site S]         devices and their provisioning state
  devices show UUID                      one device with its history
  devices --watch [--site S]             follow devices live: each state change, then the
                                         fleet's progress (until Ctrl-C)
  devices import FILE                    inventory CSV: uuid,hostname,site,profile (with progress)
  devices retry UUID                     re-run provisioning for a failed device
  devices register UUID [--amt-version V] [--site S] [--lifetime 24h]
                                         agent-initiated activation: prints a one-time password
  leases                                 DHCP leases
  sites                                  sites
  sites add FILE                         add or replace a site (YAML or JSON, config file schema)
  sites delete NAME                      remove a site added through the API
  sites cert SITE [--chain F --key F]    the site's provisioning chain and every rule's result;
                                         with files, upload a new one (refused if a rule fails)
  sites psk SITE --count N --mebx-password-file F -o OUT
                                         new PID/PPS pairs, written as a USB setup.bin
  sites setup-bin SITE --mebx-password-file F -o OUT
                                         a bare-metal setup.bin pointing devices at this box
  audit [--limit N]                      the newest audit entries
  tls ca [-o FILE]                       the management CA certificate (PEM) that devices'
                                         operational TLS certificates chain to

Without --config, the embedded default's API address and data directory are
used ($BRANCHBOX_DATA, else ./data).
`

// ctlArgs holds the flags every ctl command accepts, anywhere on the line.
type ctlArgs struct {
	config string
	output string
	rest   []string
	flags  map[string]string
}

func parseCtlArgs(args []string) (ctlArgs, error) {
	a := ctlArgs{output: "table", flags: map[string]string{}}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			a.rest = append(a.rest, arg)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if (name == "watch" || name == "force") && !hasVal {
			a.flags[name] = "true"
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return a, fmt.Errorf("flag --%s needs a value", name)
			}
			val = args[i+1]
			i++
		}
		switch name {
		case "config":
			a.config = val
		case "o":
			a.flags["out"] = val // the file a download is written to
		case "output":
			if val != "json" && val != "table" {
				return a, fmt.Errorf("--output %q: want json or table", val)
			}
			a.output = val
		default:
			a.flags[name] = val
		}
	}
	return a, nil
}

func ctl(args []string, stdout, stderr io.Writer) int {
	a, err := parseCtlArgs(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if len(a.rest) == 0 || a.rest[0] == "help" {
		fmt.Fprint(stdout, ctlUsage)
		return 0
	}
	cfg := config.Default()
	if a.config != "" {
		// Only node.api and node.data_dir matter here, so a config with
		// other problems still tells ctl where the box is.
		c, err := config.Load(a.config)
		if c == nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		cfg = c
	}
	if len(a.rest) > 1 && a.rest[0] == "cluster" && (a.rest[1] == "token" || a.rest[1] == "join") {
		if err := ctlClusterOffline(cfg, a, stdout); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	c, err := apiclient.New(cfg.Node.API, cfg.Node.DataDir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := runCtl(c, a, stdout); err != nil {
		fmt.Fprintln(stderr, err)
		if _, usage := err.(usageError); usage {
			return 2
		}
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) + "\n\n" + ctlUsage }

func runCtl(c *apiclient.Client, a ctlArgs, w io.Writer) error {
	cmd, sub := a.rest[0], ""
	if len(a.rest) > 1 {
		sub = a.rest[1]
	}
	switch {
	case cmd == "status":
		var st api.Status
		if err := c.Do("GET", "/api/v1/status", nil, &st); err != nil {
			return err
		}
		return render(w, a.output, st, func(t *tabwriter.Writer) {
			fmt.Fprintf(t, "node\t%s\nversion\t%s\nrole\t%s\nleader\t%s\n", st.Node, st.Version, st.Role, st.Leader)
			for _, name := range slices.Sorted(maps.Keys(st.Services)) {
				s := st.Services[name]
				fmt.Fprintf(t, "%s\t%s\t%s\n", name, okWord(s.OK), s.Detail)
			}
		})
	case cmd == "cluster" && (sub == "status" || sub == ""):
		var ms []cluster.Member
		if err := c.Do("GET", "/api/v1/cluster", nil, &ms); err != nil {
			return err
		}
		return render(w, a.output, ms, func(t *tabwriter.Writer) {
			fmt.Fprintln(t, "ID\tADDRESS\tROLE\tKIND\tVOTER\tAPPLIED\tLAST CONTACT")
			for _, m := range ms {
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%v\t%d\t%s\n", m.ID, m.Address, m.Role, m.Kind, m.Voter, m.AppliedIndex, m.LastContact)
			}
		})
	case cmd == "cluster" && sub == "leave":
		if err := c.Do("POST", "/api/v1/cluster/leave"+forceQuery(a), nil, nil); err != nil {
			return err
		}
		fmt.Fprintln(w, "left the cluster: stop this box; wipe its data_dir before it joins again")
		return nil
	case cmd == "cluster" && sub == "remove":
		if len(a.rest) != 3 {
			return usageError("cluster remove needs a member id")
		}
		if err := c.Do("DELETE", "/api/v1/cluster/members/"+url.PathEscape(a.rest[2])+forceQuery(a), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(w, "removed %s\n", a.rest[2])
		return nil
	case cmd == "devices" && sub == "show":
		if len(a.rest) != 3 {
			return usageError("devices show needs a UUID")
		}
		var d api.DeviceDetail
		if err := c.Do("GET", "/api/v1/devices/"+url.PathEscape(a.rest[2]), nil, &d); err != nil {
			return err
		}
		return render(w, a.output, d, func(t *tabwriter.Writer) {
			fmt.Fprintf(t, "uuid\t%s\nsite\t%s\nfqdn\t%s\nstate\t%s\namt\t%s\nip\t%s\nerror\t%s\n", d.UUID, d.Site, d.FQDN, d.State, d.AMTVersion, d.IP, d.LastError)
			for _, e := range d.History {
				fmt.Fprintf(t, "%s\t%s\t%s %s\n", e.Time.Format(time.RFC3339), e.State, e.Step, e.Detail)
			}
		})
	case cmd == "devices" && sub == "import":
		return importInventory(c, a, w)
	case cmd == "devices" && sub == "retry":
		return retryDevice(c, a, w)
	case cmd == "devices" && a.flags["watch"] != "":
		return watchDevices(c, a, w)
	case cmd == "devices" && sub == "register":
		if len(a.rest) != 3 {
			return usageError("devices register needs a UUID")
		}
		req := map[string]any{}
		if v := a.flags["amt-version"]; v != "" {
			req["amt_version"] = v
		}
		if v := a.flags["site"]; v != "" {
			req["site"] = v
		}
		if v := a.flags["lifetime"]; v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("--lifetime %q: %w", v, err)
			}
			req["lifetime_seconds"] = int(d.Seconds())
		}
		body, _ := json.Marshal(req)
		var out struct {
			UUID    string    `json:"uuid"`
			OTP     string    `json:"otp"`
			Expires time.Time `json:"expires"`
		}
		if err := c.Do("POST", "/api/v1/devices/"+url.PathEscape(a.rest[2])+"/otp", body, &out); err != nil {
			return err
		}
		return render(w, a.output, out, func(t *tabwriter.Writer) {
			fmt.Fprintf(t, "uuid\t%s\notp\t%s\nexpires\t%s\n", out.UUID, out.OTP, out.Expires.Format(time.RFC3339))
		})
	case cmd == "devices":
		q := url.Values{}
		for _, k := range []string{"state", "site"} {
			if v := a.flags[k]; v != "" {
				q.Set(k, v)
			}
		}
		var ds []api.Device
		if err := c.Do("GET", "/api/v1/devices?"+q.Encode(), nil, &ds); err != nil {
			return err
		}
		return render(w, a.output, ds, func(t *tabwriter.Writer) {
			fmt.Fprintln(t, "UUID\tSITE\tFQDN\tSTATE\tAMT\tUPDATED\tLAST ERROR")
			for _, d := range ds {
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.UUID, d.Site, d.FQDN, d.State, d.AMTVersion, d.Updated.Format(time.RFC3339), d.LastError)
			}
		})
	case cmd == "leases":
		var ls []api.Lease
		if err := c.Do("GET", "/api/v1/leases", nil, &ls); err != nil {
			return err
		}
		return render(w, a.output, ls, func(t *tabwriter.Writer) {
			fmt.Fprintln(t, "IP\tMAC\tHOSTNAME\tSITE\tSTATE\tEXPIRES")
			for _, l := range ls {
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\n", l.IP, l.MAC, l.Hostname, l.Site, l.State, l.Expires.Format(time.RFC3339))
			}
		})
	case cmd == "sites" && sub == "add":
		if len(a.rest) != 3 {
			return usageError("sites add needs a file")
		}
		body, err := os.ReadFile(a.rest[2])
		if err != nil {
			return err
		}
		var s api.Site
		if err := c.Do("POST", "/api/v1/sites", body, &s); err != nil {
			return err
		}
		fmt.Fprintf(w, "site %s stored (%s, %s)\n", s.Name, s.Domain, s.Subnet)
		return nil
	case cmd == "sites" && sub == "delete":
		if len(a.rest) != 3 {
			return usageError("sites delete needs a name")
		}
		if err := c.Do("DELETE", "/api/v1/sites/"+url.PathEscape(a.rest[2]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(w, "site %s deleted\n", a.rest[2])
		return nil
	case cmd == "sites" && sub == "cert":
		return siteCert(c, a, w)
	case cmd == "sites" && (sub == "psk" || sub == "setup-bin"):
		return setupBin(c, a, w)
	case cmd == "sites":
		var ss []api.Site
		if err := c.Do("GET", "/api/v1/sites", nil, &ss); err != nil {
			return err
		}
		return render(w, a.output, ss, func(t *tabwriter.Writer) {
			fmt.Fprintln(t, "NAME\tDOMAIN\tSUBNET\tSERVED ON\tRANGE\tCERT\tAGENTS\tSOURCE")
			for _, s := range ss {
				on := s.Interface
				if s.Relay {
					on = "relay"
				}
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%v\t%v\t%s\n", s.Name, s.Domain, s.Subnet, on, strings.Join(s.Range, "-"), s.HasCert, s.Agents, s.Source)
			}
		})
	case cmd == "tls" && sub == "ca":
		pem, _, err := c.Raw("GET", "/api/v1/tls/ca", nil)
		if err != nil {
			return err
		}
		if out := a.flags["out"]; out != "" {
			if err := os.WriteFile(out, pem, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(w, "wrote %s\n", out)
			return nil
		}
		_, err = w.Write(pem)
		return err
	case cmd == "audit":
		limit := a.flags["limit"]
		if limit == "" {
			limit = "50"
		}
		if _, err := strconv.Atoi(limit); err != nil {
			return fmt.Errorf("--limit %q is not a number", limit)
		}
		var es []cluster.AuditEntry
		if err := c.Do("GET", "/api/v1/audit?limit="+limit, nil, &es); err != nil {
			return err
		}
		return render(w, a.output, es, func(t *tabwriter.Writer) {
			fmt.Fprintln(t, "SEQ\tTIME\tACTOR\tACTION\tSUBJECT\tDETAIL")
			for _, e := range es {
				fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Actor, e.Action, e.Subject, e.Detail)
			}
		})
	}
	return usageError(fmt.Sprintf("unknown ctl command %q", strings.Join(a.rest, " ")))
}

func setupBin(c *apiclient.Client, a ctlArgs, w io.Writer) error {
	if len(a.rest) != 3 {
		return usageError("sites " + a.rest[1] + " needs a site name")
	}
	out := a.flags["out"]
	if out == "" {
		return usageError("-o OUT is required")
	}
	req := map[string]any{}
	if f := a.flags["mebx-password-file"]; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		req["new_mebx_password"] = strings.TrimRight(string(b), "\r\n")
	}
	if f := a.flags["current-mebx-password-file"]; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		req["current_mebx_password"] = strings.TrimRight(string(b), "\r\n")
	}
	path := "/api/v1/sites/" + url.PathEscape(a.rest[2]) + "/setup.bin"
	if a.rest[1] == "psk" {
		n := 1
		if v := a.flags["count"]; v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 1 {
				return fmt.Errorf("--count %q: want a positive number", v)
			}
		}
		req["count"] = n
		path = "/api/v1/sites/" + url.PathEscape(a.rest[2]) + "/psk"
	}
	body, _ := json.Marshal(req)
	data, hdr, err := c.Raw("POST", path, body)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, data, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s (%d bytes)\n", out, len(data))
	if pids := hdr.Get("X-Branchbox-PIDs"); pids != "" {
		fmt.Fprintf(w, "PIDs: %s\n", pids)
	}
	return nil
}

func render(w io.Writer, output string, v any, table func(*tabwriter.Writer)) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	t := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(t)
	return t.Flush()
}

func okWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "DOWN"
}

func forceQuery(a ctlArgs) string {
	if a.flags["force"] == "true" {
		return "?force=1"
	}
	return ""
}

// ctlClusterOffline runs the cluster commands that work on a box's data
// directory rather than its API: it may not be running (join), or the
// secret should not travel over the API (token).
func ctlClusterOffline(cfg *config.Config, a ctlArgs, w io.Writer) error {
	if a.rest[1] == "token" {
		tok, err := cluster.TokenFromDir(cfg.Node.DataDir)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, tok)
		return nil
	}
	cl := cfg.Node.Cluster
	if a.config == "" || cl == nil {
		return usageError("cluster join needs --config FILE with node.cluster.raft set")
	}
	if len(a.rest) < 3 {
		return usageError("cluster join needs the address of a member")
	}
	cc, err := appliance.ClusterConfig(cfg)
	if err != nil {
		return err
	}
	cc.Join = a.rest[2:]
	if t := a.flags["token"]; t != "" {
		cc.JoinToken = t
	}
	if err := cluster.Join(cc); err != nil {
		return err
	}
	fmt.Fprintf(w, "admitted as %s (%s); start it with: branchbox serve --config %s\n", cc.ID, cc.Role, a.config)
	return nil
}
