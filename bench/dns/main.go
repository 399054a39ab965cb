// Command dnsbench measures how fast branchbox answers
// ProvisionServer.<domain> against stock CoreDNS serving the same records
// from a hosts block, in the same run on the same machine, with dnsperf,
// and prints markdown table rows.
//
// Each server runs pinned to one CPU with GOMAXPROCS=1 and dnsperf to
// another, so the figure is the server's and not the scheduler's. Rounds
// alternate which server goes first; figures are medians.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

type options struct {
	branchbox, stock string
	duration         time.Duration
	rounds           int
	rate             int
	serverCPU        string
	clientCPU        string
}

func run() error {
	var o options
	flag.StringVar(&o.branchbox, "branchbox", "bin/branchbox", "branchbox binary")
	flag.StringVar(&o.stock, "stock", "", "stock CoreDNS binary (default: build ./bench/dns/stockdns)")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of each throughput run")
	flag.IntVar(&o.rounds, "rounds", 3, "throughput runs per server")
	flag.IntVar(&o.rate, "rate", 10000, "queries/s of the latency run")
	flag.StringVar(&o.serverCPU, "server-cpu", "0", "CPU the servers are pinned to")
	flag.StringVar(&o.clientCPU, "client-cpu", "1", "CPU dnsperf is pinned to")
	flag.Parse()
	for _, tool := range []string{"dnsperf", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (Debian packages dnsperf, util-linux)", tool)
		}
	}
	if runtime.NumCPU() < 2 {
		return errors.New("needs two CPUs: one for the server, one for dnsperf")
	}
	dir, err := os.MkdirTemp("", "dnsbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.stock == "" {
		o.stock = filepath.Join(dir, "stockdns")
		if out, err := exec.Command("go", "build", "-o", o.stock, "./bench/dns/stockdns").CombinedOutput(); err != nil {
			return fmt.Errorf("building stock CoreDNS: %v\n%s", err, out)
		}
	}

	bb, err := startBranchbox(o, dir)
	if err != nil {
		return err
	}
	defer bb.stop()
	queries, records, err := recordsOf(bb.addr)
	if err != nil {
		return fmt.Errorf("branchbox: %w", err)
	}
	stock, err := startStock(o, dir, records)
	if err != nil {
		return err
	}
	defer stock.stop()
	if err := sameAnswers(queries, bb.addr, stock.addr); err != nil {
		return err
	}
	queryFile := filepath.Join(dir, "queries.txt")
	if err := os.WriteFile(queryFile, []byte(strings.Join(queries, "\n")+"\n"), 0o644); err != nil {
		return err
	}

	servers := []*server{bb, stock}
	for r := range o.rounds {
		order := servers
		if r%2 == 1 {
			order = []*server{stock, bb}
		}
		for _, s := range order {
			res, err := throughput(o, s.cmd.Process.Pid, s.addr, queryFile)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			s.qps = append(s.qps, res.qps)
			s.cpu = append(s.cpu, float64(res.cpu/time.Duration(res.completed))/float64(time.Microsecond))
			fmt.Fprintf(os.Stderr, "round %d %-9s %8.0f q/s  %5.1f µs CPU/query\n", r+1, s.name, res.qps, s.cpu[len(s.cpu)-1])
		}
	}
	for _, s := range servers {
		p99, err := latency(o, s.addr, queryFile)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		s.p99 = p99
		fmt.Fprintf(os.Stderr, "%-9s p99 %v at %d q/s\n", s.name, p99, o.rate)
	}

	bq, sq := median(bb.qps), median(stock.qps)
	bc, sc := median(bb.cpu), median(stock.cpu)
	fmt.Printf("| DNS: ProvisionServer queries/s (dnsperf, median of %d × %v, server on 1 CPU; peer: stock CoreDNS `hosts`) | %.0f | %.0f | %.2f× |\n",
		o.rounds, o.duration, bq, sq, bq/sq)
	fmt.Printf("| DNS: ProvisionServer server CPU per query (same runs; lower is better; ratio = peer/branchbox) | %.1f µs | %.1f µs | %.2f× |\n",
		bc, sc, sc/bc)
	fmt.Printf("| DNS: ProvisionServer p99 latency at %d q/s (lower is better; ratio = peer/branchbox) | %s | %s | %.2f× |\n",
		o.rate, ms(bb.p99), ms(stock.p99), float64(stock.p99)/float64(bb.p99))
	return nil
}

type server struct {
	name string
	addr string // host:port
	cmd  *exec.Cmd
	qps  []float64
	cpu  []float64 // µs of server CPU per answered query
	p99  time.Duration
}

func (s *server) stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for len(ports) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// The appliance with its default DNS chain and two relayed sites whose
// ProvisionServer is the advertised provisioner (A and AAAA).
const branchboxConfig = `node:
  id: bench
  data_dir: %[1]s/data
  api: 127.0.0.1:%[2]d
dns:
  listen: 127.0.0.1:%[3]d
  forward: ["127.0.0.1:%[4]d"]
dhcp:
  relay_listen: 127.0.0.1:%[6]d
provisioner:
  listen: 127.0.0.1:%[5]d
  advertise: [10.1.0.1, "fd00:1::1"]
sites:
  - name: branch1
    domain: branch1.example.com
    relay: true
    subnet: 10.1.0.0/24
    range: [10.1.0.100, 10.1.0.199]
  - name: branch2
    domain: branch2.example.com
    relay: true
    subnet: 10.2.0.0/24
    range: [10.2.0.100, 10.2.0.199]
`

func startBranchbox(o options, dir string) (*server, error) {
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "branchbox.yaml")
	body := fmt.Sprintf(branchboxConfig, dir, ports[0], ports[1], ports[2], ports[3], ports[4])
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, err
	}
	s := &server{name: "branchbox", addr: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	s.cmd = pinned(o.serverCPU, o.branchbox, "serve", "--config", cfg)
	return s, startAndWait(s, filepath.Join(dir, "branchbox.log"), "provisionserver.branch1.example.com.")
}

func startStock(o options, dir string, records []string) (*server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	corefile := fmt.Sprintf(".:%d {\n\tbind 127.0.0.1\n\terrors\n\thosts {\n\t\t%s\n\t\tfallthrough\n\t}\n\tforward . 127.0.0.1:%d\n}\n",
		ports[0], strings.Join(records, "\n\t\t"), ports[1])
	path := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		return nil, err
	}
	s := &server{name: "stock", addr: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	s.cmd = pinned(o.serverCPU, o.stock, "-conf", path, "-quiet")
	return s, startAndWait(s, filepath.Join(dir, "stock.log"), "provisionserver.branch1.example.com.")
}

func pinned(cpu, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command("taskset", append([]string{"-c", cpu, bin}, args...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	return cmd
}

func startAndWait(s *server, logPath, probe string) error {
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := ask(s.addr, probe, dns.TypeA); err == nil && len(r.Answer) > 0 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.stop()
	out, _ := os.ReadFile(logPath)
	return fmt.Errorf("%s did not answer %s within 60 s:\n%s", s.name, probe, out)
}

func ask(addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// recordsOf asks branchbox for every benchmark query and returns the
// dnsperf query lines and the hosts-file lines that serve the same answers.
func recordsOf(addr string) (queries, records []string, err error) {
	for _, site := range []string{"branch1", "branch2"} {
		name := "ProvisionServer." + site + ".example.com."
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
			r, err := ask(addr, name, qtype)
			if err != nil {
				return nil, nil, err
			}
			if len(r.Answer) == 0 {
				return nil, nil, fmt.Errorf("no %s answer for %s", dns.TypeToString[qtype], name)
			}
			for _, rr := range r.Answer {
				switch v := rr.(type) {
				case *dns.A:
					records = append(records, v.A.String()+" "+name)
				case *dns.AAAA:
					records = append(records, v.AAAA.String()+" "+name)
				}
			}
			queries = append(queries, name+" "+dns.TypeToString[qtype])
		}
	}
	return queries, records, nil
}

// sameAnswers checks both servers answer every query with the same data,
// so the comparison is like for like.
func sameAnswers(queries []string, a, b string) error {
	for _, q := range queries {
		name, typ, _ := strings.Cut(q, " ")
		qtype := dns.StringToType[typ]
		ra, errA := ask(a, name, qtype)
		rb, errB := ask(b, name, qtype)
		if err := errors.Join(errA, errB); err != nil {
			return err
		}
		if da, db := rdata(ra), rdata(rb); !slices.Equal(da, db) {
			return fmt.Errorf("%s: branchbox answers %v, stock %v", q, da, db)
		}
	}
	return nil
}

func rdata(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	sort.Strings(out)
	return out
}

var (
	qpsRe       = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	completedRe = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	lostRe      = regexp.MustCompile(`Queries lost:\s+(\d+)`)
)

type result struct {
	qps       float64
	completed int64
	cpu       time.Duration // server CPU used during the run
}

// throughput runs dnsperf flat out (after a short warm-up) and returns
// queries/s, the number of queries answered and the CPU the server (pid)
// used meanwhile.
func throughput(o options, pid int, addr, queryFile string) (result, error) {
	host, port, _ := net.SplitHostPort(addr)
	base := []string{"-c", o.clientCPU, "dnsperf", "-s", host, "-p", port, "-d", queryFile, "-c", "4", "-T", "1", "-q", "100"}
	if _, err := exec.Command("taskset", append(base, "-l", "2")...).CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("dnsperf warm-up: %w", err)
	}
	before, err := cpuTime(pid)
	if err != nil {
		return result{}, err
	}
	out, err := exec.Command("taskset", append(base, "-l", strconv.Itoa(int(o.duration.Seconds())))...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("dnsperf: %w\n%s", err, out)
	}
	m, c := qpsRe.FindSubmatch(out), completedRe.FindSubmatch(out)
	if m == nil || c == nil {
		return result{}, fmt.Errorf("no q/s in dnsperf output:\n%s", out)
	}
	if l := lostRe.FindSubmatch(out); l != nil && string(l[1]) != "0" {
		fmt.Fprintf(os.Stderr, "note: dnsperf lost %s queries against %s\n", l[1], addr)
	}
	after, err := cpuTime(pid)
	if err != nil {
		return result{}, err
	}
	res := result{cpu: after - before}
	res.qps, _ = strconv.ParseFloat(string(m[1]), 64)
	res.completed, _ = strconv.ParseInt(string(c[1]), 10, 64)
	if res.completed == 0 {
		return res, errors.New("dnsperf completed no queries")
	}
	return res, nil
}

// cpuTime is the user+system CPU a process has used, from /proc. Unlike
// q/s, CPU per query does not drop when other work shares the machine.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces; utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// latency runs dnsperf at a fixed rate well below saturation, so the
// figure is the server's time per query rather than queueing, and returns
// the 99th percentile of the per-query latencies dnsperf reports.
func latency(o options, addr, queryFile string) (time.Duration, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "taskset", "-c", o.clientCPU, "dnsperf", "-s", host, "-p", port, "-d", queryFile,
		"-l", "10", "-Q", strconv.Itoa(o.rate), "-v").Output()
	if err != nil {
		return 0, fmt.Errorf("dnsperf -v: %w", err)
	}
	var lat []float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 5 && f[0] == ">" {
			if f[1] != "NOERROR" {
				return 0, fmt.Errorf("dnsperf: %s", sc.Text())
			}
			v, err := strconv.ParseFloat(f[4], 64)
			if err == nil {
				lat = append(lat, v)
			}
		}
	}
	if len(lat) < 1000 {
		return 0, fmt.Errorf("only %d latencies in dnsperf -v output", len(lat))
	}
	sort.Float64s(lat)
	return time.Duration(lat[len(lat)*99/100] * float64(time.Second)), nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
