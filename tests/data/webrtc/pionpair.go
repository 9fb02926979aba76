// pionpair: two pion/webrtc peers in one process, connected over loopback, opening one data
// channel and sending one message: the DTLS handshake pion makes by default, to record.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/pion/webrtc/v3"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "pionpair:", err)
		os.Exit(1)
	}
}

func main() {
	se := webrtc.SettingEngine{}
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	offer, err := api.NewPeerConnection(webrtc.Configuration{})
	must(err)
	answer, err := api.NewPeerConnection(webrtc.Configuration{})
	must(err)
	offer.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			must(answer.AddICECandidate(c.ToJSON()))
		}
	})
	answer.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			must(offer.AddICECandidate(c.ToJSON()))
		}
	})
	got := make(chan string, 1)
	answer.OnDataChannel(func(d *webrtc.DataChannel) {
		d.OnMessage(func(m webrtc.DataChannelMessage) { got <- string(m.Data) })
	})
	dc, err := offer.CreateDataChannel("data", nil)
	must(err)
	dc.OnOpen(func() { must(dc.SendText("hello through pion")) })
	o, err := offer.CreateOffer(nil)
	must(err)
	must(offer.SetLocalDescription(o))
	must(answer.SetRemoteDescription(o))
	a, err := answer.CreateAnswer(nil)
	must(err)
	must(answer.SetLocalDescription(a))
	must(offer.SetRemoteDescription(a))
	select {
	case m := <-got:
		fmt.Println("received:", m)
	case <-time.After(20 * time.Second):
		fmt.Fprintln(os.Stderr, "pionpair: no message within 20 s")
		os.Exit(1)
	}
	offer.Close()
	answer.Close()
}
