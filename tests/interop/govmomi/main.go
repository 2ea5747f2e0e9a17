// Command battery is an independent vSphere client: it does, with govmomi's own packages,
// what backup tools built on govmomi do, against any endpoint (the lab, vcsim), and prints
// ONE JSON line per step: {"step": name, "ok": bool, "error": "...", ...facts}.
//
// "ok" means the step ran to its end: an answer the client could decode, or a fault the
// server sent on purpose (reported in a "*fault" fact, e.g. MethodNotFound from a server that
// lacks the method). "ok": false means the client broke: a transport error, a response it
// could not decode, a value of the wrong type. pytest judges the facts per endpoint.
//
// Built from Debian's golang-github-vmware-govmomi-dev in GOPATH mode, offline, by
// scripts/lib/build-vcsim.sh (like vcsim). The password comes from $BATTERY_PASSWORD, never
// argv. Downloads go to -out; their sha256 is in the step's facts.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/progress"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const userAgent = "vcbproxy-interop-battery/1 govmomi/0.24"

type facts map[string]interface{}

type battery struct {
	ctx    context.Context
	u      *url.URL
	caFile string
	out    string

	c      *vim25.Client
	sm     *session.Manager
	finder *find.Finder
	dc     *object.Datacenter
	vm     *object.VirtualMachine
	vmMo   mo.VirtualMachine
	ds     *object.Datastore
	disk   *types.VirtualDisk

	snapFirst *types.ManagedObjectReference // "battery-1"
	snapCbt   *types.ManagedObjectReference // taken after enabling CBT (the stun)
	snapNext  *types.ManagedObjectReference // taken after snapCbt
}

// emit prints one step's result; a panic inside a step is a broken client, reported as such.
func (b *battery) step(name string, fn func(f facts) error) bool {
	f := facts{}
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		err = fn(f)
	}()
	f["step"] = name
	f["ok"] = err == nil
	if err != nil {
		f["error"] = err.Error()
	}
	line, jerr := json.Marshal(f)
	if jerr != nil {
		line = []byte(fmt.Sprintf(`{"step":%q,"ok":false,"error":%q}`, name, jerr.Error()))
	}
	fmt.Println(string(line))
	return err == nil
}

// faultName is the vSphere fault type behind an error ("" when it is no server fault).
func faultName(err error) string {
	if err == nil {
		return ""
	}
	var fault interface{}
	switch {
	case soap.IsSoapFault(err):
		fault = soap.ToSoapFault(err).VimFault()
	case soap.IsVimFault(err):
		fault = soap.ToVimFault(err)
	default:
		var terr task.Error
		if errors.As(err, &terr) && terr.LocalizedMethodFault != nil {
			fault = terr.LocalizedMethodFault.Fault
		}
	}
	if fault == nil {
		return ""
	}
	t := reflect.TypeOf(fault)
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	return t.Name()
}

// expectFault records a fault the server sent as a fact; anything else is an error.
func expectFault(f facts, key string, err error) error {
	if err == nil {
		f[key] = ""
		return nil
	}
	name := faultName(err)
	if name == "" {
		return err
	}
	f[key] = name
	return nil
}

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func fileSha(p string) (string, int64, error) {
	data, err := ioutil.ReadFile(p)
	if err != nil {
		return "", 0, err
	}
	return sha(data), int64(len(data)), nil
}

func (b *battery) connect(ctx context.Context) (*vim25.Client, *session.Manager, error) {
	sc := soap.NewClient(b.u, false)
	if err := sc.SetRootCAs(b.caFile); err != nil {
		return nil, nil, err
	}
	sc.UserAgent = userAgent
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, nil, err
	}
	sm := session.NewManager(c)
	if err := sm.Login(ctx, url.UserPassword(b.u.User.Username(), os.Getenv("BATTERY_PASSWORD"))); err != nil {
		return nil, nil, err
	}
	return c, sm, nil
}

// countingSink counts progress reports and forwards them (to the lease updater).
type countingSink struct {
	next    progress.Sinker
	mu      sync.Mutex
	reports int
	last    float32
	wg      sync.WaitGroup
}

func (s *countingSink) Sink() chan<- progress.Report {
	ch := make(chan progress.Report)
	var down chan<- progress.Report
	if s.next != nil {
		down = s.next.Sink()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for r := range ch {
			s.mu.Lock()
			s.reports++
			s.last = r.Percentage()
			s.mu.Unlock()
			if down != nil {
				down <- r
			}
		}
		if down != nil {
			close(down)
		}
	}()
	return ch
}

// firstDisk is the disk with the lowest device key (the boot disk, scsi0:0).
func firstDisk(devices object.VirtualDeviceList) *types.VirtualDisk {
	var first *types.VirtualDisk
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		disk := d.(*types.VirtualDisk)
		if first == nil || disk.Key < first.Key {
			first = disk
		}
	}
	return first
}

// sessionFault is what reading currentSession answers: "" while the session lives.
func sessionFault(ctx context.Context, c *vim25.Client, f facts, key string) error {
	var mgr mo.SessionManager
	err := property.DefaultCollector(c).RetrieveOne(ctx, *c.ServiceContent.SessionManager, []string{"currentSession"}, &mgr)
	return expectFault(f, key, err)
}

func changeIDOf(devices []types.BaseVirtualDevice, key int32) string {
	for _, d := range devices {
		disk, ok := d.(*types.VirtualDisk)
		if !ok || disk.Key != key {
			continue
		}
		if fb, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			return fb.ChangeId
		}
	}
	return ""
}

func (b *battery) snapshotDevices(ref types.ManagedObjectReference) ([]types.BaseVirtualDevice, error) {
	var s mo.VirtualMachineSnapshot
	if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, ref, []string{"config.hardware"}, &s); err != nil {
		return nil, err
	}
	return s.Config.Hardware.Device, nil
}

func (b *battery) createSnapshot(name string) (*types.ManagedObjectReference, error) {
	t, err := b.vm.CreateSnapshot(b.ctx, name, "vcbproxy interop battery", false, false)
	if err != nil {
		return nil, err
	}
	info, err := t.WaitForResult(b.ctx, nil)
	if err != nil {
		return nil, err
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("CreateSnapshot result is %T, not a ManagedObjectReference", info.Result)
	}
	return &ref, nil
}

// changedAreas pages QueryChangedDiskAreas over the whole disk.
func (b *battery) changedAreas(snap *types.ManagedObjectReference, changeID string) (int, int64, int64, error) {
	var areas int
	var bytesChanged, offset int64
	for offset < b.disk.CapacityInBytes {
		req := types.QueryChangedDiskAreas{
			This: b.vm.Reference(), Snapshot: snap, DeviceKey: b.disk.Key,
			StartOffset: offset, ChangeId: changeID,
		}
		res, err := methods.QueryChangedDiskAreas(b.ctx, b.c, &req)
		if err != nil {
			return 0, 0, 0, err
		}
		info := res.Returnval
		if info.StartOffset != offset || info.Length <= 0 {
			return 0, 0, 0, fmt.Errorf("window (%d, %d) asked from %d", info.StartOffset, info.Length, offset)
		}
		for _, a := range info.ChangedArea {
			areas++
			bytesChanged += a.Length
		}
		offset += info.Length
	}
	return areas, bytesChanged, offset, nil
}

func (b *battery) download(p string) (string, int64, error) {
	rc, _, err := b.ds.Download(b.ctx, p, nil)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	dst := filepath.Join(b.out, "folder", filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", 0, err
	}
	data, err := ioutil.ReadAll(rc)
	if err != nil {
		return "", 0, err
	}
	if err := ioutil.WriteFile(dst, data, 0o644); err != nil {
		return "", 0, err
	}
	return sha(data), int64(len(data)), nil
}

// exportLease downloads every item of a ready lease with progress, while checking that the
// VM cannot be powered off meanwhile; the lease is completed at the end.
func (b *battery) exportLease(f facts, lease *nfc.Lease, dir string, tryPowerOff bool) ([]types.OvfFile, error) {
	info, err := lease.Wait(b.ctx, nil)
	if err != nil {
		return nil, err
	}
	f["lease_items"] = len(info.Items)
	var itemSizes []int64
	for _, it := range info.Items {
		itemSizes = append(itemSizes, it.Size)
	}
	f["lease_item_sizes"] = itemSizes
	f["lease_total_kb"] = info.TotalDiskCapacityInKB
	var fileSizes []int64
	for _, d := range info.DeviceUrl {
		fileSizes = append(fileSizes, d.FileSize)
	}
	f["lease_device_file_sizes"] = fileSizes
	updater := lease.StartUpdater(b.ctx, info)
	defer updater.Done()
	if tryPowerOff {
		t, err := b.vm.PowerOff(b.ctx)
		if err == nil {
			err = t.Wait(b.ctx)
		}
		if err := expectFault(f, "power_off_during_lease_fault", err); err != nil {
			return nil, err
		}
	}
	if err := lease.Progress(b.ctx, 1); err != nil {
		return nil, err
	}
	var files []types.OvfFile
	var hashes []string
	var reports int
	for _, item := range info.Items {
		dst := filepath.Join(b.out, dir, item.Path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		sink := &countingSink{next: item}
		if err := lease.DownloadFile(b.ctx, dst, item, soap.Download{Progress: sink}); err != nil {
			return nil, err
		}
		sink.wg.Wait()
		reports += sink.reports
		sum, size, err := fileSha(dst)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, sum)
		file := item.File()
		file.Size = size
		files = append(files, file)
	}
	f["files"] = files
	f["sha256"] = hashes
	f["progress_reports"] = reports
	if err := lease.Progress(b.ctx, 100); err != nil {
		return nil, err
	}
	if err := lease.Complete(b.ctx); err != nil {
		return nil, err
	}
	return files, nil
}

func main() {
	sdk := flag.String("url", "", "https://user@host:port/sdk (password in $BATTERY_PASSWORD)")
	caFile := flag.String("ca-file", "", "CA / server certificate (PEM)")
	vmPath := flag.String("vm-path", "", "inventory path of the VM, e.g. /lab-dc/vm/web01")
	out := flag.String("out", "", "directory for downloads")
	downloads := flag.String("download", "", "comma-separated datastore paths to download first")
	flag.Parse()
	if *sdk == "" || *vmPath == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "battery: -url, -vm-path and -out are required")
		os.Exit(2)
	}
	u, err := soap.ParseURL(*sdk)
	if err != nil {
		fmt.Fprintln(os.Stderr, "battery:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b := &battery{ctx: ctx, u: u, caFile: *caFile, out: *out}
	if !b.run(strings.Split(*downloads, ",")) {
		os.Exit(1)
	}
}

// run does the steps; it stops early only when a step every later one needs failed.
func (b *battery) run(downloads []string) bool {
	if !b.step("login", func(f facts) error {
		var err error
		b.c, b.sm, err = b.connect(b.ctx)
		if err != nil {
			return err
		}
		us, err := b.sm.UserSession(b.ctx)
		if err != nil {
			return err
		}
		f["user"] = us.UserName
		f["user_agent"] = us.UserAgent
		f["sent_user_agent"] = userAgent
		about := b.c.ServiceContent.About
		f["api_type"] = about.ApiType
		f["api_version"] = about.ApiVersion
		return nil
	}) {
		return false
	}

	vmPath := flag.Lookup("vm-path").Value.String()
	if !b.step("find_by_path", func(f facts) error {
		b.finder = find.NewFinder(b.c, true)
		vm, err := b.finder.VirtualMachine(b.ctx, vmPath)
		if err != nil {
			return err
		}
		b.vm = vm
		f["moref"] = vm.Reference().Value
		f["inventory_path"] = vm.InventoryPath
		dcPath := "/" + strings.Split(strings.TrimPrefix(vmPath, "/"), "/")[0]
		b.dc, err = b.finder.Datacenter(b.ctx, dcPath)
		if err != nil {
			return err
		}
		b.finder.SetDatacenter(b.dc)
		f["datacenter"] = b.dc.InventoryPath
		return nil
	}) {
		return false
	}

	b.step("find_by_name", func(f facts) error {
		vm, err := b.finder.VirtualMachine(b.ctx, path.Base(vmPath))
		if err != nil {
			return err
		}
		f["moref"] = vm.Reference().Value
		f["same"] = vm.Reference() == b.vm.Reference()
		return nil
	})

	if !b.step("properties", func(f facts) error {
		pc := property.DefaultCollector(b.c)
		err := pc.RetrieveOne(b.ctx, b.vm.Reference(), []string{
			"name", "parent", "runtime.powerState", "runtime.host", "config.uuid",
			"config.hardware.device", "config.changeTrackingEnabled", "guest.ipAddress",
			"resourcePool", "datastore", "network", "summary.config.numEthernetCards",
		}, &b.vmMo)
		if err != nil {
			return err
		}
		m := b.vmMo
		if m.Parent != nil {
			f["parent"] = m.Parent.Type + ":" + m.Parent.Value
		}
		f["power_state"] = string(m.Runtime.PowerState)
		f["uuid"] = m.Config.Uuid
		f["ip"] = m.Guest.IpAddress
		devices := object.VirtualDeviceList(m.Config.Hardware.Device)
		b.disk = firstDisk(devices)
		if b.disk == nil {
			return errors.New("the VM has no disk")
		}
		f["disk_key"] = b.disk.Key
		f["disk_capacity"] = b.disk.CapacityInBytes
		f["disk_capacity_kb"] = b.disk.CapacityInKB
		if b.disk.CapacityInBytes == 0 { // servers before 5.5 fill only capacityInKB
			b.disk.CapacityInBytes = b.disk.CapacityInKB * 1024
		}
		if fb, ok := b.disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			f["disk_file"] = fb.FileName
		}
		f["nics"] = len(devices.SelectByType((*types.VirtualEthernetCard)(nil)))
		if m.ResourcePool != nil {
			f["resource_pool"] = m.ResourcePool.Value
			var pool mo.ResourcePool
			if err := pc.RetrieveOne(b.ctx, *m.ResourcePool, []string{"runtime", "config"}, &pool); err != nil {
				return err
			}
			f["pool_status"] = string(pool.Runtime.OverallStatus)
			f["pool_cpu_max"] = pool.Runtime.Cpu.MaxUsage
			if pool.Config.CpuAllocation.Shares != nil {
				f["pool_cpu_shares_level"] = string(pool.Config.CpuAllocation.Shares.Level)
			}
		}
		if m.Runtime.Host != nil {
			var host mo.HostSystem
			if err := pc.RetrieveOne(b.ctx, *m.Runtime.Host, []string{"name", "summary.quickStats", "summary.config.product", "config.product"}, &host); err != nil {
				return err
			}
			f["host"] = host.Name
			if host.Summary.Config.Product != nil {
				f["host_product"] = host.Summary.Config.Product.Name
				f["host_product_version"] = host.Summary.Config.Product.Version
			}
			if host.Config != nil {
				f["host_config_product"] = host.Config.Product.ProductLineId
			}
			f["host_memory_usage_mb"] = host.Summary.QuickStats.OverallMemoryUsage
		}
		var networks []string
		if len(m.Network) > 0 {
			var nets []mo.Network
			if err := pc.Retrieve(b.ctx, m.Network, []string{"name", "summary"}, &nets); err != nil {
				return err
			}
			for _, n := range nets {
				networks = append(networks, n.Name)
			}
		}
		f["networks"] = networks
		if len(m.Datastore) == 0 {
			return errors.New("the VM names no datastore")
		}
		var dsMo mo.Datastore
		if err := pc.RetrieveOne(b.ctx, m.Datastore[0], []string{"name"}, &dsMo); err != nil {
			return err
		}
		b.ds, err = b.finder.Datastore(b.ctx, dsMo.Name)
		if err != nil {
			return err
		}
		f["datastore"] = dsMo.Name
		f["datastore_dc_path"] = b.ds.DatacenterPath
		return nil
	}) {
		return false
	}

	b.step("find_by_uuid", func(f facts) error {
		ref, err := object.NewSearchIndex(b.c).FindByUuid(b.ctx, b.dc, b.vmMo.Config.Uuid, true, nil)
		if err != nil {
			return err
		}
		if ref == nil {
			return errors.New("not found")
		}
		f["same"] = ref.Reference() == b.vm.Reference()
		return nil
	})

	b.step("find_by_ip", func(f facts) error {
		ip := b.vmMo.Guest.IpAddress
		if ip == "" {
			return errors.New("the VM reports no IP")
		}
		ref, err := object.NewSearchIndex(b.c).FindByIp(b.ctx, b.dc, ip, true)
		if err != nil {
			return err
		}
		if ref == nil {
			return errors.New("not found")
		}
		f["same"] = ref.Reference() == b.vm.Reference()
		return nil
	})

	b.step("empty_results", func(f facts) error {
		// A view on the datastore folder holds no VM: RetrieveProperties over it is empty.
		dsFolder, err := b.dc.Folders(b.ctx)
		if err != nil {
			return err
		}
		v, err := view.NewManager(b.c).CreateContainerView(b.ctx, dsFolder.DatastoreFolder.Reference(), []string{"VirtualMachine"}, true)
		if err != nil {
			return err
		}
		defer v.Destroy(b.ctx)
		var vms []mo.VirtualMachine
		if err := v.Retrieve(b.ctx, []string{"VirtualMachine"}, []string{"name"}, &vms); err != nil {
			return err
		}
		f["retrieve_properties"] = len(vms)
		spec := types.PropertyFilterSpec{
			ObjectSet: []types.ObjectSpec{{
				Obj:  v.Reference(),
				Skip: types.NewBool(true),
				SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{
					Type: "ContainerView", Path: "view",
				}},
			}},
			PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: []string{"name"}}},
		}
		res, err := methods.RetrievePropertiesEx(b.ctx, b.c, &types.RetrievePropertiesEx{
			This: b.c.ServiceContent.PropertyCollector, SpecSet: []types.PropertyFilterSpec{spec},
			Options: types.RetrieveOptions{MaxObjects: 10},
		})
		if err != nil {
			return err
		}
		f["retrieve_properties_ex_nil"] = res.Returnval == nil
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, b.vm.Reference(), []string{"snapshot"}, &vm); err != nil {
			return err
		}
		f["unset_snapshot_nil"] = vm.Snapshot == nil
		return nil
	})

	b.step("download", func(f facts) error {
		got := map[string]interface{}{}
		for _, p := range downloads {
			if p == "" {
				continue
			}
			sum, size, err := b.download(p)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			got[p] = map[string]interface{}{"sha256": sum, "size": size}
		}
		f["files"] = got
		return nil
	})

	b.step("upload", func(f facts) error {
		payload := make([]byte, 3<<20+123)
		if _, err := rand.Read(payload); err != nil {
			return err
		}
		// A stream of unknown length goes out chunked; a file goes out with Content-Length.
		streamed := "vcbproxy-battery/streamed.bin"
		if err := b.ds.Upload(b.ctx, io.MultiReader(bytes.NewReader(payload)), streamed, nil); err != nil {
			return fmt.Errorf("chunked upload: %w", err)
		}
		local := filepath.Join(b.out, "upload.bin")
		if err := ioutil.WriteFile(local, payload, 0o644); err != nil {
			return err
		}
		sized := "vcbproxy-battery/sized.bin"
		if err := b.ds.UploadFile(b.ctx, local, sized, nil); err != nil {
			return fmt.Errorf("upload with Content-Length: %w", err)
		}
		f["sha256"] = sha(payload)
		f["size"] = len(payload)
		for key, p := range map[string]string{"streamed": streamed, "sized": sized} {
			sum, _, err := b.download(p)
			if err != nil {
				return err
			}
			f[key+"_roundtrip"] = sum == sha(payload)
			f[key+"_path"] = p
		}
		return nil
	})

	b.step("browse_datastore", func(f facts) error {
		browser, err := b.ds.Browser(b.ctx)
		if err != nil {
			return err
		}
		var p object.DatastorePath
		if !p.FromString(b.diskFile()) {
			return fmt.Errorf("disk file %q is no datastore path", b.diskFile())
		}
		folder := b.ds.Path(path.Dir(p.Path))
		spec := types.HostDatastoreBrowserSearchSpec{
			MatchPattern: []string{"*"},
			Details:      &types.FileQueryFlags{FileType: true, FileSize: true, Modification: true},
		}
		t, err := browser.SearchDatastore(b.ctx, folder, &spec)
		if err != nil {
			return err
		}
		info, err := t.WaitForResult(b.ctx, nil)
		if err != nil {
			return err
		}
		res, ok := info.Result.(types.HostDatastoreBrowserSearchResults)
		if !ok {
			return fmt.Errorf("SearchDatastore result is %T", info.Result)
		}
		files := map[string]interface{}{}
		for _, fi := range res.File {
			fo := fi.GetFileInfo()
			files[fo.Path] = map[string]interface{}{
				"size": fo.FileSize, "type": reflect.TypeOf(fi).Elem().Name(),
			}
		}
		f["folder"] = res.FolderPath
		f["files"] = files
		sub := types.HostDatastoreBrowserSearchSpec{
			MatchPattern: []string{"*.vmx"},
			Query:        []types.BaseFileQuery{&types.VmConfigFileQuery{}},
		}
		t, err = browser.SearchDatastoreSubFolders(b.ctx, b.ds.Path(""), &sub)
		if err != nil {
			return err
		}
		info, err = t.WaitForResult(b.ctx, nil)
		if err != nil {
			return err
		}
		all, ok := info.Result.(types.ArrayOfHostDatastoreBrowserSearchResults)
		if !ok {
			return fmt.Errorf("SearchDatastoreSubFolders result is %T", info.Result)
		}
		var vmx []string
		for _, r := range all.HostDatastoreBrowserSearchResults {
			for _, fi := range r.File {
				vmx = append(vmx, r.FolderPath+"|"+fi.GetFileInfo().Path+"|"+reflect.TypeOf(fi).Elem().Name())
			}
		}
		sort.Strings(vmx)
		f["vmx_files"] = vmx
		return nil
	})

	b.step("snapshot_create", func(f facts) error {
		ref, err := b.createSnapshot("battery-1")
		if err != nil {
			return err
		}
		b.snapFirst = ref
		f["snapshot"] = ref.Type + ":" + ref.Value
		return nil
	})

	b.step("snapshot_walk", func(f facts) error {
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, b.vm.Reference(), []string{"snapshot", "rootSnapshot"}, &vm); err != nil {
			return err
		}
		if vm.Snapshot == nil {
			return errors.New("the VM shows no snapshot")
		}
		var names []string
		var walk func([]types.VirtualMachineSnapshotTree)
		walk = func(trees []types.VirtualMachineSnapshotTree) {
			for _, t := range trees {
				names = append(names, t.Name+"|"+string(t.State))
				walk(t.ChildSnapshotList)
			}
		}
		walk(vm.Snapshot.RootSnapshotList)
		f["tree"] = names
		f["root_snapshots"] = len(vm.RootSnapshot)
		if vm.Snapshot.CurrentSnapshot != nil && b.snapFirst != nil {
			f["current_is_new"] = *vm.Snapshot.CurrentSnapshot == *b.snapFirst
		}
		found, err := b.vm.FindSnapshot(b.ctx, "battery-1")
		if err != nil {
			return err
		}
		f["found_by_name"] = b.snapFirst != nil && *found == *b.snapFirst
		return nil
	})

	b.step("cbt_enable", func(f facts) error {
		unit := int32(0)
		if b.disk.UnitNumber != nil {
			unit = *b.disk.UnitNumber
		}
		spec := types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
			&types.OptionValue{Key: "ctkEnabled", Value: "TRUE"},
			&types.OptionValue{Key: fmt.Sprintf("scsi0:%d.ctkEnabled", unit), Value: "TRUE"},
		}}
		t, err := b.vm.Reconfigure(b.ctx, spec)
		if err != nil {
			return err
		}
		if err := t.Wait(b.ctx); err != nil {
			return err
		}
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, b.vm.Reference(), []string{"config.changeTrackingEnabled", "config.extraConfig", "config.hardware.device"}, &vm); err != nil {
			return err
		}
		if vm.Config.ChangeTrackingEnabled != nil {
			f["change_tracking_enabled"] = *vm.Config.ChangeTrackingEnabled
		}
		extra := map[string]string{}
		for _, o := range vm.Config.ExtraConfig {
			ov := o.GetOptionValue()
			if strings.Contains(strings.ToLower(ov.Key), "ctkenabled") {
				extra[ov.Key] = fmt.Sprint(ov.Value)
			}
		}
		f["extra_config"] = extra
		// VDDK guide: tracking starts at the next stun/unstun; a snapshot is one.
		f["change_id_before_stun"] = changeIDOf(vm.Config.Hardware.Device, b.disk.Key)
		ref, err := b.createSnapshot("battery-cbt")
		if err != nil {
			return err
		}
		b.snapCbt = ref
		devices, err := b.snapshotDevices(*ref)
		if err != nil {
			return err
		}
		f["change_id_after_stun"] = changeIDOf(devices, b.disk.Key)
		return nil
	})

	b.step("cbt_query_all", func(f facts) error {
		if b.snapCbt == nil {
			return errors.New("no CBT snapshot")
		}
		areas, changed, covered, err := b.changedAreas(b.snapCbt, "*")
		if err := expectFault(f, "fault", err); err != nil {
			return err
		}
		f["areas"], f["bytes"], f["covered"] = areas, changed, covered
		// Without a snapshot the API reference allows the query only on a powered-off VM.
		_, _, _, err = b.changedAreas(nil, "*")
		return expectFault(f, "no_snapshot_running_fault", err)
	})

	b.step("cbt_query_since", func(f facts) error {
		if b.snapCbt == nil {
			return errors.New("no CBT snapshot")
		}
		ref, err := b.createSnapshot("battery-next")
		if err != nil {
			return err
		}
		b.snapNext = ref
		// object.VirtualMachine takes the changeId from the base snapshot's disk backing.
		info, err := b.vm.QueryChangedDiskAreas(b.ctx, b.snapCbt, ref, b.disk, 0)
		if err := expectFault(f, "fault", err); err != nil {
			if strings.Contains(err.Error(), "CBT is not enabled") {
				f["fault"] = "NoChangeId"
				return nil
			}
			return err
		}
		if f["fault"] == "" {
			f["areas"] = len(info.ChangedArea)
			f["start"], f["length"] = info.StartOffset, info.Length
		}
		return nil
	})

	b.step("export_snapshot", func(f facts) error {
		if b.snapFirst == nil {
			return errors.New("no snapshot")
		}
		res, err := methods.ExportSnapshot(b.ctx, b.c, &types.ExportSnapshot{This: *b.snapFirst})
		if err := expectFault(f, "fault", err); err != nil || f["fault"] != "" {
			return err
		}
		f["snapshot"] = b.snapFirst.Value
		_, err = b.exportLease(f, nfc.NewLease(b.c, res.Returnval), "export-snapshot", true)
		return err
	})

	b.step("snapshot_remove", func(f facts) error {
		t, err := b.vm.RemoveSnapshot(b.ctx, "battery-next", false, nil)
		if err != nil {
			return err
		}
		if _, err := t.WaitForResult(b.ctx, nil); err != nil {
			return err
		}
		t, err = b.vm.RemoveAllSnapshot(b.ctx, nil)
		if err != nil {
			return err
		}
		if err := t.Wait(b.ctx); err != nil {
			return err
		}
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, b.vm.Reference(), []string{"snapshot"}, &vm); err != nil {
			return err
		}
		f["snapshots_left"] = vm.Snapshot != nil
		return nil
	})

	b.step("power_off", func(f facts) error {
		t, err := b.vm.PowerOff(b.ctx)
		if err != nil {
			return err
		}
		if err := t.Wait(b.ctx); err != nil {
			return err
		}
		state, err := b.vm.PowerState(b.ctx)
		f["power_state"] = string(state)
		return err
	})

	b.step("export_vm", func(f facts) error {
		lease, err := b.vm.Export(b.ctx)
		if err := expectFault(f, "fault", err); err != nil || f["fault"] != "" {
			return err
		}
		files, err := b.exportLease(f, lease, "export-vm", false)
		if err != nil {
			return err
		}
		name := path.Base(vmPath)
		desc, err := ovf.NewManager(b.c).CreateDescriptor(b.ctx, b.vm, types.OvfCreateDescriptorParams{
			Name: name, OvfFiles: files,
		})
		if err := expectFault(f, "descriptor_fault", err); err != nil || f["descriptor_fault"] != "" {
			return err
		}
		ovfPath := filepath.Join(b.out, "export-vm", name+".ovf")
		if err := ioutil.WriteFile(ovfPath, []byte(desc.OvfDescriptor), 0o644); err != nil {
			return err
		}
		env, err := ovf.Unmarshal(strings.NewReader(desc.OvfDescriptor))
		if err != nil {
			return fmt.Errorf("govmomi cannot read the descriptor: %w", err)
		}
		f["ovf"] = ovfPath
		f["ovf_files"] = len(env.References)
		if env.Disk != nil {
			var caps []string
			for _, d := range env.Disk.Disks {
				caps = append(caps, d.Capacity)
			}
			f["ovf_disk_capacities"] = caps
		}
		if env.VirtualSystem != nil {
			f["ovf_name"] = env.VirtualSystem.ID
		}
		f["ovf_errors"] = len(desc.Error)
		return nil
	})

	var vmxPath, vmName string
	var folder *object.Folder
	b.step("unregister", func(f facts) error {
		var vm mo.VirtualMachine
		if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, b.vm.Reference(), []string{"name", "parent", "config.files.vmPathName"}, &vm); err != nil {
			return err
		}
		vmxPath, vmName = vm.Config.Files.VmPathName, vm.Name
		folder = object.NewFolder(b.c, *vm.Parent)
		if err := b.vm.Unregister(b.ctx); err != nil {
			return err
		}
		found, err := object.NewSearchIndex(b.c).FindByDatastorePath(b.ctx, b.dc, vmxPath)
		if err != nil {
			return err
		}
		f["vmx"] = vmxPath
		f["still_found"] = found != nil
		return nil
	})

	b.step("register", func(f facts) error {
		if folder == nil {
			return errors.New("nothing unregistered")
		}
		pool, err := b.finder.DefaultResourcePool(b.ctx)
		if err != nil {
			pools, perr := b.finder.ResourcePoolList(b.ctx, "*")
			if perr != nil || len(pools) == 0 {
				return err
			}
			pool = pools[0]
		}
		t, err := folder.RegisterVM(b.ctx, vmxPath, vmName, false, pool, nil)
		if err != nil {
			return err
		}
		info, err := t.WaitForResult(b.ctx, nil)
		if err != nil {
			return err
		}
		ref, ok := info.Result.(types.ManagedObjectReference)
		if !ok {
			return fmt.Errorf("RegisterVM result is %T", info.Result)
		}
		b.vm = object.NewVirtualMachine(b.c, ref)
		f["moref"] = ref.Value
		vm, err := b.finder.VirtualMachine(b.ctx, vmPath)
		if err != nil {
			return err
		}
		f["found_by_path"] = vm.Reference() == ref
		return nil
	})

	b.step("power_on", func(f facts) error {
		t, err := b.vm.PowerOn(b.ctx)
		if err != nil {
			return err
		}
		if err := t.Wait(b.ctx); err != nil {
			return err
		}
		state, err := b.vm.PowerState(b.ctx)
		f["power_state"] = string(state)
		return err
	})

	b.step("events", func(f facts) error {
		m := event.NewManager(b.c)
		kinds := func(events []types.BaseEvent) []string {
			seen := map[string]bool{}
			var out []string
			for _, e := range events {
				name := reflect.TypeOf(e).Elem().Name()
				if !seen[name] {
					seen[name] = true
					out = append(out, name)
				}
			}
			sort.Strings(out)
			return out
		}
		events, err := m.QueryEvents(b.ctx, types.EventFilterSpec{
			Entity: &types.EventFilterSpecByEntity{
				Entity: b.dc.Reference(), Recursion: types.EventFilterSpecRecursionOptionAll,
			},
			MaxCount: 1000,
		})
		if err != nil {
			return err
		}
		f["datacenter_events"] = kinds(events)
		events, err = m.QueryEvents(b.ctx, types.EventFilterSpec{
			EventTypeId: []string{"UserLoginSessionEvent"}, MaxCount: 1000,
		})
		if err != nil {
			return err
		}
		f["login_events"] = len(events)
		agents := map[string]bool{}
		for _, e := range events {
			if le, ok := e.(*types.UserLoginSessionEvent); ok {
				agents[le.UserAgent] = true
			}
		}
		f["login_event_has_user_agent"] = agents[userAgent]
		return nil
	})

	b.step("task_collector", func(f facts) error {
		var tm mo.TaskManager
		if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, *b.c.ServiceContent.TaskManager, []string{"recentTask"}, &tm); err != nil {
			return err
		}
		f["recent_tasks"] = len(tm.RecentTask)
		res, err := methods.CreateCollectorForTasks(b.ctx, b.c, &types.CreateCollectorForTasks{
			This: *b.c.ServiceContent.TaskManager,
			Filter: types.TaskFilterSpec{Entity: &types.TaskFilterSpecByEntity{
				Entity: b.dc.Reference(), Recursion: types.TaskFilterSpecRecursionOptionAll,
			}},
		})
		if err := expectFault(f, "fault", err); err != nil || f["fault"] != "" {
			return err
		}
		collector := object.NewHistoryCollector(b.c, res.Returnval)
		defer collector.Destroy(b.ctx)
		var hc mo.TaskHistoryCollector
		if err := property.DefaultCollector(b.c).RetrieveOne(b.ctx, res.Returnval, []string{"latestPage"}, &hc); err != nil {
			return err
		}
		f["latest_page"] = len(hc.LatestPage)
		if err := collector.Rewind(b.ctx); err != nil {
			return err
		}
		next, err := methods.ReadNextTasks(b.ctx, b.c, &types.ReadNextTasks{This: res.Returnval, MaxCount: 1000})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		var ids []string
		for _, t := range next.Returnval {
			if !seen[t.DescriptionId] {
				seen[t.DescriptionId] = true
				ids = append(ids, t.DescriptionId)
			}
		}
		sort.Strings(ids)
		f["task_kinds"] = ids
		return nil
	})

	b.step("terminate_session", func(f facts) error {
		c2, sm2, err := b.connect(b.ctx)
		if err != nil {
			return err
		}
		us, err := sm2.UserSession(b.ctx)
		if err != nil {
			return err
		}
		if err := b.sm.TerminateSession(b.ctx, []string{us.Key}); err != nil {
			return err
		}
		active, err := methods.SessionIsActive(b.ctx, b.c, &types.SessionIsActive{
			This: *b.c.ServiceContent.SessionManager, SessionID: us.Key, UserName: us.UserName,
		})
		if err := expectFault(f, "is_active_fault", err); err != nil {
			return err
		}
		if err == nil {
			f["still_active"] = active.Returnval
		}
		return sessionFault(b.ctx, c2, f, "terminated_fault")
	})

	b.step("logout", func(f facts) error {
		if err := b.sm.Logout(b.ctx); err != nil {
			return err
		}
		return sessionFault(b.ctx, b.c, f, "after_logout_fault")
	})
	return true
}

func (b *battery) diskFile() string {
	if fb, ok := b.disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
		return fb.FileName
	}
	return ""
}
