package boot

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const testDep = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
`

const testAlias = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias virtio:d00000004v* virtio_rng
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias fs-ext4 ext4
`

// fakeKernel is a modules directory and a /sys/bus whose devices appear
// as their bus drivers "load": virtio_pci brings up the virtio devices.
type fakeKernel struct {
	t       *testing.T
	mods    *Modules
	bus     string
	virtio  []string // modaliases virtio_pci brings up
	mu      sync.Mutex
	loaded  []string
	blockOn string // the module whose load makes a block device
	block   string
}

func newFakeKernel(t *testing.T, pci, virtio []string) *fakeKernel {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(testDep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(testAlias), 0o644)
	m, err := OpenModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{t: t, mods: m, bus: t.TempDir(), virtio: virtio, block: t.TempDir(), blockOn: "virtio_blk"}
	for i, a := range pci {
		k.device("pci", i, a)
	}
	k.device("cpu", 0, "cpu:type:x86,ven0000fam0006mod003F:feature:,0000")
	m.Insert = k.insert
	return k
}

func (k *fakeKernel) device(bus string, i int, alias string) {
	d := filepath.Join(k.bus, bus, "devices", bus+string(rune('0'+i)))
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "modalias"), []byte(alias+"\n"), 0o644)
}

func (k *fakeKernel) insert(file string) error {
	name := moduleName(file)
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, d := range k.mods.deps[name] {
		if !slices.Contains(k.loaded, d) {
			k.t.Errorf("%s loaded before its dependency %s", name, d)
		}
	}
	k.loaded = append(k.loaded, name)
	if name == "virtio_pci" {
		for i, a := range k.virtio {
			k.device("virtio", i, a)
		}
	}
	if name == k.blockOn {
		os.Mkdir(filepath.Join(k.block, "vda"), 0o755)
	}
	return nil
}

func TestLoadDrivers(t *testing.T) {
	virtioPCI := "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
	e1000 := "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
	for _, tc := range []struct {
		name   string
		pci    []string
		virtio []string
		want   []string // modules loaded, sorted
	}{
		{"virtio net and disk", []string{virtioPCI, virtioPCI}, []string{"virtio:d00000001v00001AF4", "virtio:d00000002v00001AF4"},
			[]string{"failover", "virtio", "virtio_blk", "virtio_net", "virtio_pci", "virtio_ring"}},
		{"no disk", []string{virtioPCI}, []string{"virtio:d00000001v00001AF4"},
			[]string{"failover", "virtio", "virtio_net", "virtio_pci", "virtio_ring"}},
		{"e1000 only", []string{e1000}, nil, []string{"e1000"}},
		{"nothing known", []string{"pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(t, tc.pci, tc.virtio)
			LoadDrivers(k.mods, k.bus, k.block, time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
			got := slices.Sorted(slices.Values(k.loaded))
			if !slices.Equal(got, tc.want) {
				t.Errorf("loaded %v, want %v", got, tc.want)
			}
		})
	}
}

// A disk controller whose disk never shows up: the wait is bounded.
func TestLoadDriversDiskWait(t *testing.T) {
	k := newFakeKernel(t, []string{"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"}, []string{"virtio:d00000002v00001AF4"})
	k.blockOn = "" // the controller finds no disk
	done := make(chan struct{})
	go func() {
		LoadDrivers(k.mods, k.bus, k.block, 50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("LoadDrivers kept waiting for a disk")
	}
}

func TestOpenModulesErrors(t *testing.T) {
	for _, tc := range []struct{ name, dep, alias, want string }{
		{"bad dep line", "kernel/x.ko\n", "", "modules.dep:1: want FILE: DEPS"},
		{"bad alias line", "", "alias onlyone\n", "modules.alias:1: want alias PATTERN MODULE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(tc.dep), 0o644)
			os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(tc.alias), 0o644)
			_, err := OpenModules(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseFileSystems(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []FileSystem
		err      string
	}{
		{"two", "# comment\next4 crc32c_generic ext4\n\nvfat nls_cp437 vfat # FAT\n",
			[]FileSystem{{"ext4", []string{"crc32c_generic", "ext4"}}, {"vfat", []string{"nls_cp437", "vfat"}}}, ""},
		{"type without modules", "ext4\n", nil, "line 1: want TYPE MODULE..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFileSystems([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			for i := range got {
				if got[i].Type != tc.want[i].Type || !slices.Equal(got[i].Modules, tc.want[i].Modules) {
					t.Errorf("[%d] = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}
