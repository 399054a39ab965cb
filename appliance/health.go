package appliance

import (
	"sync"
	"time"
)

// ServiceHealth is one service's last reported condition.
type ServiceHealth struct {
	OK     bool      `json:"ok"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
}

// Health collects what each service says about itself, for the API.
type Health struct {
	mu sync.Mutex
	m  map[string]ServiceHealth
}

// NewHealth returns an empty board.
func NewHealth() *Health { return &Health{m: map[string]ServiceHealth{}} }

// Set records a service's condition; Since changes only when OK flips.
func (h *Health) Set(service string, ok bool, detail string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, had := h.m[service]
	since := time.Now().UTC()
	if had && prev.OK == ok {
		since = prev.Since
	}
	h.m[service] = ServiceHealth{OK: ok, Detail: detail, Since: since}
}

// Reporter returns a func bound to one service, for packages that must not
// know about Health.
func (h *Health) Reporter(service string) func(ok bool, detail string) {
	return func(ok bool, detail string) { h.Set(service, ok, detail) }
}

// Snapshot copies the board.
func (h *Health) Snapshot() map[string]ServiceHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]ServiceHealth, len(h.m))
	for k, v := range h.m {
		out[k] = v
	}
	return out
}
