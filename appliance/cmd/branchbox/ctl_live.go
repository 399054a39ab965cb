package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/branchbox/branchbox/appliance"
	"github.com/branchbox/branchbox/appliance/api"
	"github.com/branchbox/branchbox/appliance/apiclient"
)

// importInventory sends the CSV and reports progress as the appliance
// writes it, one line per batch of rows.
func importInventory(c *apiclient.Client, a ctlArgs, w io.Writer) error {
	if len(a.rest) != 3 {
		return usageError("devices import needs a CSV file")
	}
	body, err := os.ReadFile(a.rest[2])
	if err != nil {
		return err
	}
	resp, err := c.Stream("POST", "/api/v1/devices/import?progress=1", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m struct {
			Done, Total int
			Imported    *int
			Error       string
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("import progress line %q: %w", sc.Text(), err)
		}
		switch {
		case m.Error != "":
			return fmt.Errorf("import stopped after %d device(s): %s", m.Done, m.Error)
		case m.Imported != nil && a.output == "json":
			return json.NewEncoder(w).Encode(map[string]int{"imported": *m.Imported})
		case m.Imported != nil:
			fmt.Fprintf(w, "imported %d device(s)\n", *m.Imported)
			return nil
		case a.output != "json":
			fmt.Fprintf(w, "importing %d/%d\n", m.Done, m.Total)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("import: the appliance closed the answer before the total")
}

// watchDevices prints each device as its state changes and the fleet's
// progress after every batch, until interrupted.
func watchDevices(c *apiclient.Client, a ctlArgs, w io.Writer) error {
	resp, err := c.Stream("GET", "/api/v1/events", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	site := a.flags["site"]
	var event string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // a snapshot of a large fleet is one line
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
			continue
		case !strings.HasPrefix(line, "data: "):
			continue
		}
		data := []byte(strings.TrimPrefix(line, "data: "))
		if a.output == "json" {
			fmt.Fprintf(w, "{\"event\":%q,\"data\":%s}\n", event, data)
			continue
		}
		switch event {
		case "snapshot":
			var s api.Snapshot
			if err := json.Unmarshal(data, &s); err != nil {
				return err
			}
			t := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(t, "UUID\tSITE\tFQDN\tSTATE\tLAST ERROR")
			for _, d := range s.Devices {
				if site == "" || d.Site == site {
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", d.UUID, d.Site, d.FQDN, d.State, d.LastError)
				}
			}
			t.Flush()
			fmt.Fprintln(w, progressLine(s.Counts))
		case "device":
			var d api.Device
			if err := json.Unmarshal(data, &d); err != nil {
				return err
			}
			if site == "" || d.Site == site {
				fmt.Fprintf(w, "%s  %s  %-10s %s %s\n", d.Updated.Local().Format(time.TimeOnly), d.UUID, d.State, d.FQDN, d.LastError)
			}
		case "counts":
			var cs api.Counts
			if err := json.Unmarshal(data, &cs); err != nil {
				return err
			}
			fmt.Fprintln(w, progressLine(cs))
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("the appliance ended the event stream")
}

func progressLine(c api.Counts) string {
	pct := 0
	if c.Total > 0 {
		pct = 100 * c.States["activated"] / c.Total
	}
	return fmt.Sprintf("progress: activated %d/%d (%d%%), activating %d, seen %d, failed %d",
		c.States["activated"], c.Total, pct, c.States["activating"], c.States["seen"], c.States["failed"])
}

// siteCert shows a site's provisioning chain with every rule's result, or
// with --chain and --key uploads a new one, checked before it is stored.
func siteCert(c *apiclient.Client, a ctlArgs, w io.Writer) error {
	if len(a.rest) != 3 {
		return usageError("sites cert needs a site name")
	}
	path := "/api/v1/sites/" + url.PathEscape(a.rest[2]) + "/cert"
	var st appliance.CertStatus
	chain, key := a.flags["chain"], a.flags["key"]
	switch {
	case chain == "" && key == "":
		if err := c.Do("GET", path, nil, &st); err != nil {
			return err
		}
	case chain == "" || key == "":
		return usageError("sites cert SITE uploads with both --chain and --key")
	default:
		chainPEM, err := os.ReadFile(chain)
		if err != nil {
			return err
		}
		keyPEM, err := os.ReadFile(key)
		if err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]string{"chain_pem": string(chainPEM), "key_pem": string(keyPEM)})
		if err := c.Do("PUT", path, body, &st); err != nil {
			return err
		}
	}
	return render(w, a.output, st, func(t *tabwriter.Writer) {
		fmt.Fprintf(t, "site\t%s\ndomain\t%s\nvalid until\t%s\n", st.Site, st.Domain, st.NotAfter.Format(time.RFC3339))
		for _, ci := range st.Certificates {
			fmt.Fprintf(t, "certificate\t%s\t(until %s)\n", ci.Subject, ci.NotAfter.Format(time.RFC3339))
		}
		for _, r := range st.Results {
			fmt.Fprintf(t, "%s\t%s\t%s\n", r.Status, r.Rule, r.Reason)
		}
	})
}

// retryDevice re-runs provisioning for a failed device.
func retryDevice(c *apiclient.Client, a ctlArgs, w io.Writer) error {
	if len(a.rest) != 3 {
		return usageError("devices retry needs a UUID")
	}
	var out map[string]string
	if err := c.Do("POST", "/api/v1/devices/"+url.PathEscape(a.rest[2])+"/retry", nil, &out); err != nil {
		return err
	}
	return render(w, a.output, out, func(t *tabwriter.Writer) {
		fmt.Fprintf(t, "device %s: %s (ctl devices show %s, or ctl devices --watch)\n", out["uuid"], out["status"], out["uuid"])
	})
}
