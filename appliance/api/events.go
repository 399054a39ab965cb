package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/branchbox/branchbox/cluster"
)

// Counts is how many devices are in each provisioning state.
type Counts struct {
	Total  int            `json:"total"`
	States map[string]int `json:"states"`
}

// Snapshot is the first event of GET /api/v1/events.
type Snapshot struct {
	Devices []Device `json:"devices"`
	Counts  Counts   `json:"counts"`
}

// eventInterval coalesces store changes: a fleet of devices moving at
// once is sent as one batch of "device" events per interval.
const eventInterval = 250 * time.Millisecond

// keepAlive is sent on an idle stream so proxies and browsers keep it.
const keepAlive = 15 * time.Second

func countDevices(ds []cluster.Device) Counts {
	c := Counts{Total: len(ds), States: map[string]int{}}
	for _, d := range ds {
		c.States[d.State]++
	}
	return c
}

// events is GET /api/v1/events, server-sent events: "snapshot" with every
// device and the counts, then "device" for each device whose record changed
// and "counts" after each batch. A browser's EventSource reconnects on its
// own and gets a fresh snapshot.
func (h *handlers) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	changed, stop := h.o.Store.Watch()
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	// The server's read deadline would cancel the request once it passed
	// (net/http's background read fails and cancels the context): a
	// stream lives for as long as its reader.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})

	ds := h.o.Store.Devices()
	seen := make(map[string]time.Time, len(ds))
	snap := Snapshot{Devices: make([]Device, 0, len(ds)), Counts: countDevices(ds)}
	for _, d := range ds {
		seen[d.UUID] = d.Updated
		snap.Devices = append(snap.Devices, deviceView(d))
	}
	if writeEvent(w, "snapshot", snap) != nil {
		return
	}
	fl.Flush()
	tick := time.NewTicker(eventInterval)
	defer tick.Stop()
	idle := time.NewTimer(keepAlive)
	defer idle.Stop()
	dirty := false
	for {
		select {
		case <-r.Context().Done():
			return
		case <-changed:
			dirty = true
		case <-idle.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
			idle.Reset(keepAlive)
		case <-tick.C:
			if !dirty {
				continue
			}
			dirty = false
			ds := h.o.Store.Devices()
			sent := false
			for _, d := range ds {
				if t, ok := seen[d.UUID]; ok && t.Equal(d.Updated) {
					continue
				}
				seen[d.UUID] = d.Updated
				if writeEvent(w, "device", deviceView(d)) != nil {
					return
				}
				sent = true
			}
			if !sent {
				continue
			}
			if writeEvent(w, "counts", countDevices(ds)) != nil {
				return
			}
			fl.Flush()
			idle.Reset(keepAlive)
		}
	}
}

func writeEvent(w http.ResponseWriter, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
	return err
}
