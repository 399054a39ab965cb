package server

import (
	"errors"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/branchbox/branchbox/cluster"
	"github.com/branchbox/branchbox/plugins/dhcp/chain"
)

// binding is the lease a REQUEST's ACK promises: it must be committed
// before the ACK may leave.
type binding struct {
	req   *dhcpv4.DHCPv4 // to address a NAK if the commit loses
	site  string
	lease cluster.Lease
	ttl   time.Duration
}

// process turns one received datagram into a reply and where to send it,
// or nil to send nothing. An ACK to a REQUEST comes with the binding to
// commit first: plugins decide, the server commits, so no ACK can leave
// without its lease whatever the chain holds. iface is the receiving
// interface, "" for the relay listener. It never panics on any input: see
// FuzzProcess.
func (s *Server) process(iface string, pkt []byte) (*dhcpv4.DHCPv4, *net.UDPAddr, *binding) {
	if !s.store.IsLeader() {
		s.m.dropped.WithLabelValues(dropNotLeader).Inc()
		return nil, nil, nil
	}
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		s.m.dropped.WithLabelValues(dropMalformed).Inc()
		return nil, nil, nil
	}
	if reason := invalid(req); reason != "" {
		s.m.dropped.WithLabelValues(reason).Inc()
		return nil, nil, nil
	}
	mt := req.MessageType()
	s.m.of(mt).requests.Inc()
	st := s.sites.Load().forRequest(iface, req)
	if st == nil {
		reason := dropNoSite
		if iface == "" && !chain.IsSet(req.GatewayIPAddr) && !chain.IsSet(req.ClientIPAddr) {
			// The unbound relay listener also sees every broadcast from a
			// directly attached LAN, which that LAN's socket answers.
			reason = dropLinkBroadcast
		}
		s.m.dropped.WithLabelValues(reason).Inc()
		return nil, nil, nil
	}
	st.requests.Inc()
	resp := newReply(req)
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
	}
	if mt == dhcpv4.MessageTypeInform {
		resp.ClientIPAddr = req.ClientIPAddr
	}
	resp = st.chain.Run(req, resp)
	if resp == nil {
		return nil, nil, nil
	}
	if !chain.IsNAK(resp) && mt != dhcpv4.MessageTypeInform && !chain.IsSet(resp.YourIPAddr) {
		s.m.dropped.WithLabelValues(dropNoAddress).Inc()
		return nil, nil, nil
	}
	var bind *binding
	if mt == dhcpv4.MessageTypeRequest && !chain.IsNAK(resp) {
		bind = &binding{req: req, site: st.rec.Name, ttl: chain.LeaseTime(st.rec), lease: cluster.Lease{
			IP: resp.YourIPAddr.String(), MAC: chain.MAC(req), ClientID: chain.ClientID(req), Hostname: resp.HostName(),
		}}
	}
	return resp, s.destination(req, resp), bind
}

// handle answers one datagram by calling reply exactly once: with nil
// when there is nothing to send, at once for anything that commits
// nothing, and for a REQUEST once its lease is committed (a NAK if the
// address went to another client meanwhile, nothing if the commit failed,
// so the client retries rather than being refused a valid binding). It
// never waits for a commit itself.
func (s *Server) handle(iface string, pkt []byte, reply func(*dhcpv4.DHCPv4, *net.UDPAddr)) {
	resp, dst, bind := s.process(iface, pkt)
	if bind == nil {
		reply(resp, dst)
		return
	}
	s.pending.Add(1)
	s.book.Commit(bind.site, bind.lease, bind.ttl, func(err error) {
		s.pending.Add(-1)
		switch {
		case err == nil:
			reply(resp, dst)
		case errors.Is(err, cluster.ErrConflict):
			resp = chain.NAK(resp, "address in use")
			reply(resp, s.destination(bind.req, resp))
		case s.ctx.Err() != nil:
			reply(nil, nil) // shutting down: the commit's fate no longer matters
		default:
			s.m.dropped.WithLabelValues(dropCommitFailed).Inc()
			s.log.Warn("lease commit failed", "site", bind.site, "ip", bind.lease.IP, "err", err)
			reply(nil, nil)
		}
	})
}

// newReply starts the reply to req the way RFC 2131 table 3 has it: its
// xid, flags, chaddr and giaddr, and (RFC 3046, RFC 6842) the relay agent
// information and client identifier options. The library's constructor
// would first draw a random xid from the kernel only to overwrite it.
func newReply(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	resp := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientHWAddr:  req.ClientHWAddr,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		Options:       make(dhcpv4.Options, 16),
	}
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(code); v != nil {
			resp.Options[code.Code()] = v
		}
	}
	return resp
}

// invalid names why a parsed packet is not a request we serve, or "".
func invalid(req *dhcpv4.DHCPv4) string {
	switch {
	case req.OpCode != dhcpv4.OpcodeBootRequest:
		return dropWrongOp
	case req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6:
		return dropHWType
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeInform:
		return ""
	}
	return dropMsgType
}

// destination follows RFC 2131 4.1: through the relay when there is one,
// to ciaddr when the client has an address, else broadcast on the link
// (the socket is bound to the site's interface). Broadcasting rather than
// unicasting to yiaddr avoids writing raw frames and every client accepts it.
func (s *Server) destination(req, resp *dhcpv4.DHCPv4) *net.UDPAddr {
	if chain.IsSet(req.GatewayIPAddr) {
		if chain.IsNAK(resp) {
			resp.SetBroadcast()
		}
		return &net.UDPAddr{IP: req.GatewayIPAddr.To4(), Port: s.serverPort}
	}
	if !chain.IsNAK(resp) && chain.IsSet(req.ClientIPAddr) {
		return &net.UDPAddr{IP: req.ClientIPAddr.To4(), Port: s.clientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: s.clientPort}
}

// peekType reads option 53 without decoding the packet, so the read loop
// can route it cheaply. Anything it cannot read is 0 and left to process
// to judge.
func peekType(pkt []byte) dhcpv4.MessageType {
	const optionsStart = 240 // fixed BOOTP header plus the magic cookie
	for i := optionsStart; i+1 < len(pkt); {
		code := pkt[i]
		switch code {
		case 0: // pad
			i++
			continue
		case 255: // end
			return 0
		}
		n := int(pkt[i+1])
		if code == 53 && n == 1 && i+2 < len(pkt) {
			return dhcpv4.MessageType(pkt[i+2])
		}
		i += 2 + n
	}
	return 0
}
