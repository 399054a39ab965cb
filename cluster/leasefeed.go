package cluster

// leaseFeedSize is how many lease changes the store remembers for readers
// that keep their own view of the leases (LeaseChanges): seconds of a
// DHCP storm, far more than such a reader lets pile up between looks.
const leaseFeedSize = 1 << 15

// leaseFeed is a ring of the addresses whose lease changed, in the order
// the changes were applied. Change n (counting from 0) is ips[n%len].
type leaseFeed struct {
	ips  []string
	next uint64 // changes recorded, plus one per reset
	from uint64 // the oldest position still answered
}

func (f *leaseFeed) add(ip string) {
	if f.ips == nil {
		f.ips = make([]string, leaseFeedSize)
	}
	f.ips[f.next%uint64(len(f.ips))] = ip
	f.next++
	if f.next-f.from > uint64(len(f.ips)) {
		f.from = f.next - uint64(len(f.ips))
	}
}

// reset forgets every change: the leases were replaced wholesale (a
// snapshot restore), so no reader can catch up change by change.
func (f *leaseFeed) reset() {
	f.next++
	f.from = f.next
}

// since appends the addresses changed from position n on to dst. ok is
// false when some of them are no longer known.
func (f *leaseFeed) since(n uint64, dst []string) (_ []string, next uint64, ok bool) {
	if n < f.from || n > f.next {
		return dst, f.next, false
	}
	for i := n; i < f.next; i++ {
		dst = append(dst, f.ips[i%uint64(len(f.ips))])
	}
	return dst, f.next, true
}
