// Command govmomi-peer is the bench's raw peer: what an admin runs instead of vcbproxy for a
// one-off copy of a VM's disk, done with govmomi's own code paths, so `scripts/bench` can
// put vcbproxy side by side with them in the same run.
//
//	govmomi-peer download -url https://USER@HOST:PORT/sdk -ca-file PEM -dc DC -ds DS -out DIR PATH...
//	    object.Datastore.DownloadFile for each datastore PATH, one after the other, on one
//	    session: the code path of `govc datastore.download` (soap.Client.DownloadFile, one
//	    GET, io.Copy into a file; no hash, no fsync, every byte written). With -http-port N the
//	    same requests go to plain HTTP on port N (vcbproxy's nbd mode), the session cookie
//	    given as a ticket, since the jar keeps a Secure cookie off plain HTTP.
//	govmomi-peer export -url ... -ca-file PEM -vm /DC/vm/NAME -out DIR [-snapshot]
//	    an nfc.Lease export as `govc export.ovf` makes it: ExportVm (the VM powered off), or
//	    with -snapshot ExportSnapshot of a snapshot taken (and removed) here; lease.Wait,
//	    StartUpdater, lease.DownloadFile of each .vmdk item, Complete, CreateDescriptor and
//	    the .ovf written.
//
// The password comes from $PEER_PASSWORD, never argv. It prints ONE JSON line: the
// seconds from process start to login, to the first byte of the first file (the first
// download's response), to the last byte, and the files with their sizes.
//
// Built from Debian's golang-github-vmware-govmomi-dev in GOPATH mode, offline, by
// scripts/lib/build-vcsim.sh (like vcsim and the interop battery).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

var start = time.Now()

type file struct {
	Path    string  `json:"path"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

type report struct {
	Command    string  `json:"command"`
	Login      float64 `json:"login"`       // process start to a logged-in session
	FirstStart float64 `json:"first_start"` // process start to the first download's request
	LastEnd    float64 `json:"last_end"`    // process start to the last byte written
	Files      []file  `json:"files"`
	Exit       float64 `json:"exit"` // process start to the line being printed
}

func since() float64 { return time.Since(start).Seconds() }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "govmomi-peer:", err)
	os.Exit(1)
}

func connect(ctx context.Context, sdk, caFile string) (*vim25.Client, *session.Manager) {
	u, err := soap.ParseURL(sdk)
	if err != nil {
		fail(err)
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(caFile); err != nil {
		fail(err)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		fail(err)
	}
	sm := session.NewManager(c)
	if err := sm.Login(ctx, url.UserPassword(u.User.Username(), os.Getenv("PEER_PASSWORD"))); err != nil {
		fail(err)
	}
	return c, sm
}

func size(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		fail(err)
	}
	return st.Size()
}

func download(ctx context.Context, c *vim25.Client, rep *report, dcName, dsName, out string, httpPort int, paths []string) {
	finder := find.NewFinder(c, true)
	dc, err := finder.Datacenter(ctx, dcName)
	if err != nil {
		fail(err)
	}
	finder.SetDatacenter(dc)
	ds, err := finder.Datastore(ctx, dsName)
	if err != nil {
		fail(err)
	}
	for i, p := range paths {
		dst := filepath.Join(out, path.Base(p))
		began := since()
		if i == 0 {
			rep.FirstStart = began
		}
		var err error
		if httpPort > 0 {
			err = plainDownload(ctx, c, ds, p, dst, httpPort)
		} else {
			err = ds.DownloadFile(ctx, p, dst, &soap.DefaultDownload)
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", p, err))
		}
		rep.LastEnd = since()
		rep.Files = append(rep.Files, file{Path: p, Bytes: size(dst), Seconds: rep.LastEnd - began})
	}
}

// plainDownload is Datastore.DownloadFile's soap.Client.DownloadFile over plain HTTP.
func plainDownload(ctx context.Context, c *vim25.Client, ds *object.Datastore, p, dst string, port int) error {
	u := ds.NewURL(p)
	u.Scheme = "http"
	u.Host = fmt.Sprintf("%s:%d", u.Hostname(), port)
	param := soap.DefaultDownload
	for _, cookie := range c.Client.Jar.Cookies(c.URL()) {
		if cookie.Name == "vmware_soap_session" {
			param.Ticket = cookie
		}
	}
	return c.Client.DownloadFile(ctx, dst, u, &param)
}

func export(ctx context.Context, c *vim25.Client, rep *report, vmPath, out string, snapshot bool) {
	ref, err := object.NewSearchIndex(c).FindByInventoryPath(ctx, vmPath)
	if err != nil || ref == nil {
		fail(fmt.Errorf("VM %s not found (%v)", vmPath, err))
	}
	vm := object.NewVirtualMachine(c, ref.Reference())
	var lease *nfc.Lease
	if snapshot {
		task, err := vm.CreateSnapshot(ctx, "govmomi-peer", "", false, false)
		if err != nil {
			fail(err)
		}
		res, err := task.WaitForResult(ctx, nil)
		if err != nil {
			fail(err)
		}
		snap := res.Result.(types.ManagedObjectReference)
		defer func() {
			rm := types.RemoveSnapshot_Task{This: snap, RemoveChildren: false}
			r, err := methods.RemoveSnapshot_Task(ctx, c, &rm)
			if err == nil {
				err = object.NewTask(c, r.Returnval).Wait(ctx)
			}
			if err != nil {
				fail(err)
			}
		}()
		r, err := methods.ExportSnapshot(ctx, c, &types.ExportSnapshot{This: snap})
		if err != nil {
			fail(err)
		}
		lease = nfc.NewLease(c, r.Returnval)
	} else if lease, err = vm.Export(ctx); err != nil {
		fail(err)
	}
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		fail(err)
	}
	updater := lease.StartUpdater(ctx, info)
	name := path.Base(vmPath)
	cdp := types.OvfCreateDescriptorParams{Name: name}
	for _, item := range info.Items {
		if filepath.Ext(item.Path) != ".vmdk" { // govc export.ovf without -i
			continue
		}
		if !strings.HasPrefix(item.Path, name) {
			item.Path = name + "-" + item.Path
		}
		dst := filepath.Join(out, item.Path)
		began := since()
		if rep.Files == nil {
			rep.FirstStart = began
		}
		if err := lease.DownloadFile(ctx, dst, item, soap.Download{}); err != nil {
			fail(fmt.Errorf("%s: %w", item.Path, err))
		}
		rep.LastEnd = since()
		rep.Files = append(rep.Files, file{Path: item.Path, Bytes: size(dst), Seconds: rep.LastEnd - began})
		f := item.File()
		f.Size = size(dst)
		cdp.OvfFiles = append(cdp.OvfFiles, f)
	}
	if err := lease.Complete(ctx); err != nil {
		fail(err)
	}
	updater.Done()
	desc, err := ovf.NewManager(c).CreateDescriptor(ctx, vm, cdp)
	if err != nil {
		fail(err)
	}
	if err := ioutil.WriteFile(filepath.Join(out, name+".ovf"), []byte(desc.OvfDescriptor), 0o644); err != nil {
		fail(err)
	}
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "download" && os.Args[1] != "export") {
		fmt.Fprintln(os.Stderr, "usage: govmomi-peer download|export -url URL -ca-file PEM ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	sdk := fs.String("url", "", "https://USER@HOST:PORT/sdk (password in $PEER_PASSWORD)")
	caFile := fs.String("ca-file", "", "CA / server certificate (PEM)")
	out := fs.String("out", "", "directory the files are written into")
	dc := fs.String("dc", "", "download: datacenter name")
	ds := fs.String("ds", "", "download: datastore name")
	vmPath := fs.String("vm", "", "export: inventory path of the VM")
	httpPort := fs.Int("http-port", 0, "download: plain HTTP on this port instead of the SDK's HTTPS")
	snapshot := fs.Bool("snapshot", false, "export: ExportSnapshot of a snapshot taken here")
	_ = fs.Parse(os.Args[2:])
	if *sdk == "" || *out == "" {
		fail(fmt.Errorf("-url and -out are required"))
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c, sm := connect(ctx, *sdk, *caFile)
	rep := &report{Command: os.Args[1], Login: since()}
	if os.Args[1] == "download" {
		download(ctx, c, rep, *dc, *ds, *out, *httpPort, fs.Args())
	} else {
		export(ctx, c, rep, *vmPath, *out, *snapshot)
	}
	if err := sm.Logout(ctx); err != nil {
		fail(err)
	}
	rep.Exit = since()
	line, err := json.Marshal(rep)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(line))
}
