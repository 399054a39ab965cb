// Package registry hands live Go values to CoreDNS plugins. CoreDNS builds
// plugins from Corefile text, which cannot carry a pointer; so the host
// registers a value under an id, writes that id into the Corefile it
// generates, and the plugin's setup looks the id up.
package registry

import (
	"fmt"
	"sync"
)

// Registry maps ids to values of one type. The zero value is ready to use.
type Registry[T any] struct {
	mu sync.RWMutex
	m  map[string]T
}

// Add registers v under id and returns the func that removes it again.
// An id may be registered only once at a time.
func (r *Registry[T]) Add(id string, v T) (func(), error) {
	if id == "" {
		return nil, fmt.Errorf("empty registry id")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[id]; dup {
		return nil, fmt.Errorf("id %q is already registered", id)
	}
	if r.m == nil {
		r.m = make(map[string]T)
	}
	r.m[id] = v
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.m, id)
			r.mu.Unlock()
		})
	}, nil
}

// Get returns the value registered under id.
func (r *Registry[T]) Get(id string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.m[id]
	return v, ok
}
