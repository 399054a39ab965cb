package server

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
)

func TestZZProf(t *testing.T) {
	if os.Getenv("ZZPROF") == "" {
		t.Skip()
	}
	up := upstream(t, "198.51.100.7")
	chain := os.Getenv("ZZPROF")
	cfg := Config{Listen: "127.0.0.1:" + os.Getenv("ZZPORT"), Forward: []string{up}}
	id := "zz"
	release, err := register(id, sources(testStore(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	text, _ := Corefile(cfg, id)
	for _, drop := range strings.Split(chain, ",") {
		text = strings.Replace(text, "\t"+drop+"\n", "", 1)
	}
	inst, err := caddy.Start(input(text))
	if err != nil {
		t.Fatal(err)
	}
	defer stop(inst)
	d, _ := time.ParseDuration(os.Getenv("ZZTIME"))
	time.Sleep(d)
}
