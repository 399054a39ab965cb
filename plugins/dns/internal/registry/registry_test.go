package registry

import "testing"

func TestAddGetRemove(t *testing.T) {
	var r Registry[int]
	remove, err := r.Add("a", 1)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := r.Get("a"); !ok || v != 1 {
		t.Fatalf("Get(a) = %d, %v; want 1, true", v, ok)
	}
	if _, err := r.Add("a", 2); err == nil {
		t.Fatal("second Add under the same id succeeded")
	}
	remove()
	remove() // a second call must not remove a later registration
	if _, ok := r.Get("a"); ok {
		t.Fatal("value still registered after remove")
	}
	removeAgain, err := r.Add("a", 3)
	if err != nil {
		t.Fatalf("re-adding after remove: %v", err)
	}
	remove()
	if v, ok := r.Get("a"); !ok || v != 3 {
		t.Fatalf("stale remove func dropped the new value: %d, %v", v, ok)
	}
	removeAgain()
}

func TestEmptyID(t *testing.T) {
	var r Registry[string]
	if _, err := r.Add("", "x"); err == nil {
		t.Fatal("empty id accepted")
	}
}
