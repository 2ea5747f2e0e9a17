// Command vcsim starts govmomi's vCenter simulator for vcbproxy's interop tests.
//
// It is built from Debian's golang-github-vmware-govmomi-dev (GOPATH mode, no network)
// by scripts/lib/build-vcsim.sh, so the peer is an implementation nobody here wrote.
// It serves the VPX model (one datacenter, clusters, hosts, VMs, local datastores) over
// TLS on 127.0.0.1 with a kernel-chosen port, prints ONE JSON line describing itself on
// stdout (the test fixture reads it), and serves until SIGTERM or SIGINT.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// datacenterInfo is one datacenter of the model: its datastores (name -> directory, which
// may repeat another datacenter's names), its hosts and VMs.
type datacenterInfo struct {
	Datastores map[string]string `json:"datastores"`
	Hosts      []string          `json:"hosts"`
	VMs        []string          `json:"vms"`
}

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
	// Every datacenter by inventory path ("DC0", "F0/DC1"): with -datacenters 2 both have a
	// datastore LocalDS_0, which "datastores" (by name) cannot tell apart.
	Datacenters map[string]*datacenterInfo `json:"datacenters"`
}

// inventoryPath is the path of ref below the root folder (which is never named in a path).
func inventoryPath(ref types.ManagedObjectReference) string {
	var parts []string
	for {
		e, ok := simulator.Map.Get(ref).(mo.Entity)
		if !ok || e.Entity().Parent == nil {
			break
		}
		parts = append([]string{e.Entity().Name}, parts...)
		ref = *e.Entity().Parent
	}
	return strings.Join(parts, "/")
}

// datacenterOf is the inventory path of the datacenter above ref.
func datacenterOf(ref types.ManagedObjectReference) string {
	for {
		obj := simulator.Map.Get(ref)
		if _, ok := obj.(*simulator.Datacenter); ok {
			return inventoryPath(ref)
		}
		e, ok := obj.(mo.Entity)
		if !ok || e.Entity().Parent == nil {
			return ""
		}
		ref = *e.Entity().Parent
	}
}

// colonHex formats a digest as vSphere prints thumbprints: "AB:CD:...".
func colonHex(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// selfSigned makes a P-256 certificate for 127.0.0.1/localhost. vcsim's built-in test
// certificate (Go 1.19's httptest one) has a 1024-bit RSA key, which OpenSSL's default
// security level refuses ("EE certificate key too weak"), so clients could only connect
// with verification off; this one can be pinned or used as a CA file.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vcsim.vcbproxy.test", Organization: []string{"vcbproxy interop"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func main() {
	certPath := flag.String("cert-file", "", "write the server certificate (PEM) here")
	datacenters := flag.Int("datacenters", 1, "datacenters in the VPX model, each with its own LocalDS_0")
	folders := flag.Int("folders", 0, "how many of the datacenters sit inside a datacenter folder (F0, ...)")
	machines := flag.Int("machines", 0, "VMs per standalone host and per cluster (0: the VPX model's 2)")
	flag.Parse()

	model := simulator.VPX()
	model.Datacenter = *datacenters
	model.Folder = *folders
	if *machines > 0 { // scripts/bench exports 8 VMs at once
		model.Machine = *machines
	}
	defer model.Remove() // the datastores' temporary directories
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the VPX model: %v", err)
	}
	cert, err := selfSigned()
	if err != nil {
		log.Fatalf("vcsim: making a certificate: %v", err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	// A real user and a random password: with vcsim's default login ("user:pass") it
	// accepts ANY non-empty credentials, so a wrong password would go unnoticed.
	secret := make([]byte, 12)
	if _, err := rand.Read(secret); err != nil {
		log.Fatalf("vcsim: %v", err)
	}
	password := fmt.Sprintf("Vcsim-%x", secret)
	model.Service.Listen = &url.URL{
		Host: "127.0.0.1:0",
		User: url.UserPassword("administrator@vsphere.local", password),
	}
	server := model.Service.NewServer()
	defer server.Close()

	leaf := server.Certificate()
	if *certPath == "" {
		*certPath = filepath.Join(os.TempDir(), fmt.Sprintf("vcsim-%d.pem", os.Getpid()))
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	if err := ioutil.WriteFile(*certPath, pemBytes, 0o644); err != nil {
		log.Fatalf("vcsim: writing the certificate: %v", err)
	}

	host, portText, _ := net.SplitHostPort(server.URL.Host)
	port, _ := strconv.Atoi(portText)
	sum := sha256.Sum256(leaf.Raw)
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
		Datacenters:      map[string]*datacenterInfo{},
	}
	dcOf := func(ref types.ManagedObjectReference) *datacenterInfo {
		path := datacenterOf(ref)
		if out.Datacenters[path] == nil {
			out.Datacenters[path] = &datacenterInfo{Datastores: map[string]string{}}
		}
		return out.Datacenters[path]
	}
	for _, e := range simulator.Map.All("Datacenter") {
		if out.Datacenter == "" || e.Entity().Name < out.Datacenter {
			out.Datacenter = e.Entity().Name // DC0: the first, at the root
		}
	}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		// Local datastores: Summary.Url is the host directory holding the files.
		out.Datastores[ds.Name] = ds.Summary.Url
		dcOf(ds.Reference()).Datastores[ds.Name] = ds.Summary.Url
	}
	for _, e := range simulator.Map.All("HostSystem") {
		dc := dcOf(e.Reference())
		dc.Hosts = append(dc.Hosts, e.Entity().Name)
	}
	for _, e := range simulator.Map.All("VirtualMachine") {
		out.VMs = append(out.VMs, e.Entity().Name)
		dc := dcOf(e.Reference())
		dc.VMs = append(dc.VMs, e.Entity().Name)
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
