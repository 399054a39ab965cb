package provisioner

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/provisioner/hello"
)

// InventoryEntry is one CSV row: uuid, hostname, site, profile.
type InventoryEntry struct {
	UUID, Hostname, Site, Profile string
}

// InventoryError lists every bad row, so an admin fixes a file in one go.
type InventoryError struct{ Problems []string }

func (e *InventoryError) Error() string { return strings.Join(e.Problems, "\n") }

// maxInventoryRows keeps one import within what a single API call should do.
const maxInventoryRows = 100000

// ParseInventory reads CSV rows "uuid,hostname,site,profile" (site and
// profile may be empty; a first row starting with "uuid" is a header) and
// checks each against the store. Nothing is written.
func ParseInventory(st Store, r io.Reader) ([]InventoryEntry, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	var out []InventoryEntry
	var problems []string
	seen := map[string]int{}
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &InventoryError{append(problems, err.Error())}
		}
		if line == 1 && strings.EqualFold(strings.TrimSpace(rec[0]), "uuid") {
			continue
		}
		if len(out) >= maxInventoryRows {
			return nil, &InventoryError{append(problems, fmt.Sprintf("more than %d rows", maxInventoryRows))}
		}
		e, errs := checkRow(st, rec)
		for _, msg := range errs {
			problems = append(problems, fmt.Sprintf("line %d: %s", line, msg))
		}
		if len(errs) > 0 {
			continue
		}
		if prev, dup := seen[e.UUID]; dup {
			problems = append(problems, fmt.Sprintf("line %d: uuid %s already on line %d", line, e.UUID, prev))
			continue
		}
		seen[e.UUID] = line
		out = append(out, e)
	}
	if len(problems) > 0 {
		return nil, &InventoryError{problems}
	}
	return out, nil
}

func checkRow(st Store, rec []string) (InventoryEntry, []string) {
	for len(rec) < 4 {
		rec = append(rec, "")
	}
	var errs []string
	if len(rec) > 4 {
		errs = append(errs, fmt.Sprintf("%d columns, want uuid,hostname,site,profile", len(rec)))
	}
	field := func(i int) string { return strings.TrimSpace(rec[i]) }
	e := InventoryEntry{Hostname: strings.ToLower(strings.TrimSuffix(field(1), ".")), Site: field(2), Profile: field(3)}
	u, err := hello.NormalizeUUID(field(0))
	if err != nil {
		errs = append(errs, err.Error())
	}
	e.UUID = u
	if e.Hostname == "" {
		errs = append(errs, "hostname is empty")
	}
	for _, label := range strings.Split(e.Hostname, ".") {
		if e.Hostname != "" && !hostLabel.MatchString(label) {
			errs = append(errs, fmt.Sprintf("hostname %q: %q is not a DNS label", e.Hostname, label))
			break
		}
	}
	if e.Site != "" {
		if _, ok := st.Site(e.Site); !ok {
			errs = append(errs, fmt.Sprintf("site %q does not exist", e.Site))
		}
	}
	if e.Profile != "" {
		if _, ok := st.Profile(e.Profile); !ok {
			errs = append(errs, fmt.Sprintf("profile %q does not exist", e.Profile))
		}
	}
	return e, errs
}

// ImportInventory validates the whole file, then records every row as an
// inventoried device. It returns how many rows were written.
func ImportInventory(ctx context.Context, st Store, r io.Reader, now time.Time, progress func(done, total int)) (int, error) {
	entries, err := ParseInventory(st, r)
	if err != nil {
		return 0, err
	}
	now = now.UTC()
	for i, e := range entries {
		if progress != nil {
			progress(i, len(entries))
		}
		if err := st.Apply(ctx, cluster.DeviceUpdate{
			UUID: e.UUID, Hostname: e.Hostname, Site: e.Site, Profile: e.Profile, Inventoried: true, Time: now,
			Event: cluster.DeviceEvent{Step: "inventory", Detail: "imported as " + e.Hostname},
		}); err != nil {
			return i, fmt.Errorf("device %s: %w", e.UUID, err)
		}
	}
	if err := st.Apply(ctx, cluster.Audit{Entry: cluster.AuditEntry{
		Time: now, Actor: "api", Action: "inventory.import", Detail: fmt.Sprintf("%d device(s)", len(entries)),
	}}); err != nil {
		return len(entries), err
	}
	return len(entries), nil
}
