// Command vcsim starts govmomi's vCenter simulator for vcbproxy's interop tests.
//
// It is built from Debian's golang-github-vmware-govmomi-dev (GOPATH mode, no network)
// by scripts/lib/build-vcsim.sh, so the peer is an implementation nobody here wrote.
// It serves the VPX model (one datacenter, clusters, hosts, VMs, local datastores) over
// TLS on 127.0.0.1 with a kernel-chosen port, prints ONE JSON line describing itself on
// stdout (the test fixture reads it), and serves until SIGTERM or SIGINT.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

type info struct {
	URL              string            `json:"url"`
	Host             string            `json:"host"`
	Port             int               `json:"port"`
	User             string            `json:"user"`
	Password         string            `json:"password"`
	ThumbprintSHA256 string            `json:"thumbprint_sha256"`
	ThumbprintSHA1   string            `json:"thumbprint_sha1"`
	CertFile         string            `json:"cert_file"`
	Datacenter       string            `json:"datacenter"`
	Datastores       map[string]string `json:"datastores"`
	VMs              []string          `json:"vms"`
}

// colonHex formats a digest as vSphere prints thumbprints: "AB:CD:...".
func colonHex(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func main() {
	certPath := flag.String("cert-file", "", "write the server certificate (PEM) here")
	flag.Parse()

	model := simulator.VPX()
	defer model.Remove() // the datastores' temporary directories
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the VPX model: %v", err)
	}
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0"}
	server := model.Service.NewServer()
	defer server.Close()

	cert := server.Certificate()
	if *certPath == "" {
		*certPath = filepath.Join(os.TempDir(), fmt.Sprintf("vcsim-%d.pem", os.Getpid()))
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := ioutil.WriteFile(*certPath, pemBytes, 0o644); err != nil {
		log.Fatalf("vcsim: writing the certificate: %v", err)
	}

	host, portText, _ := net.SplitHostPort(server.URL.Host)
	port, _ := strconv.Atoi(portText)
	password, _ := server.URL.User.Password()
	sum := sha256.Sum256(cert.Raw)
	out := info{
		URL:              (&url.URL{Scheme: server.URL.Scheme, Host: server.URL.Host, Path: server.URL.Path}).String(),
		Host:             host,
		Port:             port,
		User:             server.URL.User.Username(),
		Password:         password,
		ThumbprintSHA256: colonHex(sum[:]),
		ThumbprintSHA1:   server.CertificateInfo().ThumbprintSHA1,
		CertFile:         *certPath,
		Datastores:       map[string]string{},
	}
	for _, e := range simulator.Map.All("Datacenter") {
		out.Datacenter = e.Entity().Name
	}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		// Local datastores: Summary.Url is the host directory holding the files.
		out.Datastores[ds.Name] = ds.Summary.Url
	}
	for _, e := range simulator.Map.All("VirtualMachine") {
		out.VMs = append(out.VMs, e.Entity().Name)
	}
	line, err := json.Marshal(out)
	if err != nil {
		log.Fatalf("vcsim: %v", err)
	}
	fmt.Println(string(line))
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	os.Remove(*certPath)
}
