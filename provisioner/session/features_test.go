package session

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/branchbox/branchbox/provisioner/internal/fakeamt"
)

func TestApplyFeatures(t *testing.T) {
	tls := &TLSCertificate{FQDN: "amt-1.branch1.example.com", Issue: func(*rsa.PublicKey) ([]byte, error) { return nil, errors.New("unused") }}
	cases := []struct {
		name     string
		features *Features
		step     string   // of the error; "" for success
		want     []string // redirection, KVM, listener, opt-in as the device has them
		steps    []string
	}{
		{name: "everything on, no consent", features: &Features{SOL: true, IDER: true, KVM: true, UserConsent: "none"},
			want:  []string{"32771", "2", "true", "0"},
			steps: []string{StepRedirection, StepKVM, StepListener, StepUserConsent}},
		{name: "everything off, consent for all", features: &Features{UserConsent: "all"},
			want:  []string{"32768", "3", "false", "4294967295"},
			steps: []string{StepRedirection, StepKVM, StepListener, StepUserConsent}},
		{name: "KVM alone opens the listener", features: &Features{KVM: true, UserConsent: "kvm"},
			want:  []string{"32768", "2", "true", "1"},
			steps: []string{StepRedirection, StepKVM, StepListener, StepUserConsent}},
		{name: "unknown consent is refused before any change", features: &Features{SOL: true, UserConsent: "sometimes"},
			step: StepUserConsent, want: []string{"", "", "", ""}},
		{name: "TLS on a device without a certificate store", features: &Features{UserConsent: "kvm", TLS: tls},
			step: StepTLSKey, want: []string{"32768", "3", "false", "1"},
			steps: []string{StepRedirection, StepKVM, StepListener, StepUserConsent}},
		{name: "no features: the device is left alone", want: []string{"", "", "", ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := fakeamt.New()
			srv := d.Start(t)
			p := params(t, host(t, srv.URL))
			p.Features = c.features
			var steps []string
			p.Step = func(step, _ string) {
				if slices.Contains([]string{StepRedirection, StepKVM, StepListener, StepUserConsent, StepTLSKey}, step) {
					steps = append(steps, step)
				}
			}
			_, err := Activate(context.Background(), p)
			var se *StepError
			switch {
			case c.step == "" && err != nil:
				t.Fatal(err)
			case c.step != "" && (!errors.As(err, &se) || se.Step != c.step):
				t.Fatalf("error %v, want one in step %s", err, c.step)
			}
			d.Lock()
			got := []string{d.Redirection, d.KVM, d.Listener, d.OptIn}
			d.Unlock()
			if !slices.Equal(got, c.want) {
				t.Errorf("device (redirection, kvm, listener, opt-in) = %q, want %q", got, c.want)
			}
			if !slices.Equal(steps, c.steps) {
				t.Errorf("steps %v, want %v", steps, c.steps)
			}
		})
	}
}

// The hand-built Put must be what firmware parses: the class element in
// the class namespace, one child per property, the selector in the header.
func TestPutEnvelope(t *testing.T) {
	m := newMessages()
	env := m.put(uriTLSSettings, tlsRemote, [][2]string{{"InstanceID", tlsRemote}, {"Enabled", "true"}, {"ElementName", "a<b&c"}})
	dec := xml.NewDecoder(bytes.NewReader([]byte(env)))
	var names []xml.Name
	var selector string
	inSelector := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("envelope does not parse: %v\n%s", err, env)
		}
		switch v := tok.(type) {
		case xml.StartElement:
			names = append(names, v.Name)
			inSelector = v.Name.Local == "Selector"
		case xml.CharData:
			if inSelector {
				selector += string(v)
			}
		case xml.EndElement:
			inSelector = false
		}
	}
	want := []xml.Name{{Space: uriTLSSettings, Local: "AMT_TLSSettingData"}, {Space: uriTLSSettings, Local: "InstanceID"},
		{Space: uriTLSSettings, Local: "Enabled"}, {Space: uriTLSSettings, Local: "ElementName"}}
	i := slices.Index(names, want[0])
	if i < 0 || !slices.Equal(names[i:], want) {
		t.Errorf("body elements %v, want %v", names, want)
	}
	if selector != tlsRemote {
		t.Errorf("selector %q", selector)
	}
}
