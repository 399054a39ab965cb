package boot

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Modules are the kernel modules staged in the image for one kernel
// release, as depmod described them in modules.dep and modules.alias.
//
// The image stages drivers for many NICs and disk controllers but loads
// only those whose hardware is present: under TCG each module costs tens of
// milliseconds, and loading all of them took ~1.8 s of a boot.
type Modules struct {
	dir     string
	files   map[string]string   // module name -> .ko path, relative to dir
	deps    map[string][]string // module name -> every module it needs
	aliases []modAlias

	// Insert loads one module file; finit_module(2) unless a test sets it.
	Insert func(file string) error

	mu     sync.Mutex
	loads  map[string]*modLoad
	probed map[string]bool // modaliases already matched
}

type modAlias struct {
	pattern, module string
	prefix          string // the pattern up to its first wildcard
}

// modLoad is one module's load, shared by everything that needs it.
type modLoad struct {
	done chan struct{}
	err  error
}

// OpenModules reads modules.dep and modules.alias in dir
// (/lib/modules/<release>).
func OpenModules(dir string) (*Modules, error) {
	m := &Modules{
		dir: dir, files: map[string]string{}, deps: map[string][]string{},
		Insert: insertModule, loads: map[string]*modLoad{}, probed: map[string]bool{},
	}
	err := eachLine(filepath.Join(dir, "modules.dep"), func(line string) error {
		file, deps, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("want FILE: DEPS, got %q", line)
		}
		name := moduleName(file)
		m.files[name] = file
		for _, d := range strings.Fields(deps) {
			m.deps[name] = append(m.deps[name], moduleName(d))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(filepath.Join(dir, "modules.alias"), func(line string) error {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("want alias PATTERN MODULE, got %q", line)
		}
		m.aliases = append(m.aliases, modAlias{f[1], f[2], f[1][:strings.IndexAny(f[1]+"*", "*?[")]})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func eachLine(file string, fn func(string) error) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("%s:%d: %w", file, n, err)
		}
	}
	return sc.Err()
}

// moduleName is how the kernel and modules.alias name a module file:
// kernel/drivers/char/hw_random/virtio-rng.ko is virtio_rng.
func moduleName(file string) string {
	return strings.ReplaceAll(strings.TrimSuffix(path.Base(file), ".ko"), "-", "_")
}

// Has reports whether the image stages the module.
func (m *Modules) Has(name string) bool {
	_, ok := m.files[name]
	return ok
}

// File is the module's .ko path relative to the modules directory.
func (m *Modules) File(name string) string { return m.files[name] }

// Match lists the staged modules whose aliases match a device's modalias.
func (m *Modules) Match(modalias string) []string {
	var out []string
	for _, a := range m.aliases {
		// The prefix rules out nearly every alias cheaply: the image's
		// NIC drivers alone have thousands.
		if !strings.HasPrefix(modalias, a.prefix) {
			continue
		}
		if ok, _ := path.Match(a.pattern, modalias); ok && m.Has(a.module) {
			out = append(out, a.module)
		}
	}
	return out
}

// ProbeDevices matches the modalias of every device under sysBus
// (/sys/bus) not seen by an earlier call against the staged modules, and
// returns the modules those devices need that are not loaded yet.
func (m *Modules) ProbeDevices(sysBus string) []string {
	files, _ := filepath.Glob(filepath.Join(sysBus, "*", "devices", "*", "modalias"))
	var need []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		alias := strings.TrimSpace(string(data))
		m.mu.Lock()
		seen := m.probed[alias]
		m.probed[alias] = true
		m.mu.Unlock()
		if seen || alias == "" {
			continue
		}
		for _, mod := range m.Match(alias) {
			if !m.Loaded(mod) && !slices.Contains(need, mod) {
				need = append(need, mod)
			}
		}
	}
	return need
}

// Loaded reports whether a load of the module was started.
func (m *Modules) Loaded(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.loads[name]
	return ok
}

// Load loads the modules and everything they depend on. Modules load
// concurrently, each as soon as its dependencies are in: on a box with
// more than one CPU the drivers' probes overlap. A module that fails is
// logged and the others still load.
func (m *Modules) Load(names []string, log *slog.Logger) error {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.load(name)
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err != nil {
		log.Warn("kernel modules", "err", err)
	}
	return err
}

func (m *Modules) load(name string) error {
	m.mu.Lock()
	l, started := m.loads[name]
	if !started {
		l = &modLoad{done: make(chan struct{})}
		m.loads[name] = l
	}
	m.mu.Unlock()
	if started {
		<-l.done
		return l.err
	}
	defer close(l.done)
	file, ok := m.files[name]
	if !ok {
		l.err = fmt.Errorf("module %s: not in the image", name)
		return l.err
	}
	var wg sync.WaitGroup
	depErrs := make([]error, len(m.deps[name]))
	for i, d := range m.deps[name] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			depErrs[i] = m.load(d)
		}()
	}
	wg.Wait()
	if err := errors.Join(depErrs...); err != nil {
		l.err = fmt.Errorf("module %s: a dependency failed: %w", name, err)
		return l.err
	}
	if err := m.Insert(filepath.Join(m.dir, file)); err != nil && !errors.Is(err, unix.EEXIST) {
		l.err = fmt.Errorf("module %s: %w", name, err)
	}
	return l.err
}

func insertModule(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

// storageDirs hold the drivers of disk controllers, under kernel/.
var storageDirs = []string{"drivers/block/", "drivers/ata/", "drivers/nvme/", "drivers/scsi/", "drivers/mmc/", "drivers/usb/storage/"}

func (m *Modules) storage(name string) bool {
	file := strings.TrimPrefix(m.files[name], "kernel/")
	return slices.ContainsFunc(storageDirs, func(d string) bool { return strings.HasPrefix(file, d) })
}

// LoadDrivers loads the drivers of the devices present, round after round
// because a driver brings up devices of its own (virtio_pci the virtio
// devices, a SATA host its disks). Once a disk controller has a driver it
// waits up to wait for the first block device: SATA, NVMe and USB disks
// appear a while after their controller's driver loaded. With no disk
// controller there is nothing to wait for. It returns the modules it
// loaded, in the order it asked for them.
func LoadDrivers(m *Modules, sysBus, sysBlock string, wait time.Duration, log *slog.Logger) []string {
	var loaded []string
	var deadline time.Time
	for {
		need := m.ProbeDevices(sysBus)
		if len(need) > 0 {
			m.Load(need, log)
			loaded = append(loaded, need...)
			if deadline.IsZero() && slices.ContainsFunc(need, m.storage) {
				deadline = time.Now().Add(wait)
			}
			continue
		}
		if deadline.IsZero() || len(blockDevices(sysBlock)) > 0 || time.Now().After(deadline) {
			return loaded
		}
		time.Sleep(20 * time.Millisecond)
	}
}
