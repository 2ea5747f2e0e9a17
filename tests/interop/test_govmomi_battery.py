"""govmomi's own client packages against the lab and against vcsim (issue 15).

tests/interop/govmomi/main.go does what govmomi-based backup tools do (find, properties,
tasks through a property collector, snapshots, CBT through extraConfig, datastore browser,
/folder down- and uploads as object.Datastore makes them, NFC export with progress, OVF
descriptor, power, unregister/register, events, task history, sessions) and prints one JSON
line per step. Each peer gets a process of its own, because the battery unregisters and
registers its VM again.

Every step must run to its end on both peers ("ok"). Where the two answer differently, the
test says which one follows the vSphere API reference (or the VDDK guide) and pins the
other; tests/interop/README.md lists the same differences.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.govmomi import run_battery
from tests.fixtures.tools import need
from tests.fixtures.vcsim import start_vcsim, stop_vcsim
from vcblab.client import LabClient
from vcblab.process import start_lab

STEPS = [
    "login",
    "find_by_path",
    "find_by_name",
    "properties",
    "find_by_uuid",
    "find_by_ip",
    "empty_results",
    "download",
    "upload",
    "browse_datastore",
    "snapshot_create",
    "snapshot_walk",
    "cbt_enable",
    "cbt_query_all",
    "cbt_query_since",
    "export_snapshot",
    "snapshot_remove",
    "power_off",
    "export_vm",
    "unregister",
    "register",
    "power_on",
    "events",
    "task_collector",
    "terminate_session",
    "logout",
]
USER_AGENT = "vcbproxy-interop-battery/1 govmomi/0.24"


@dataclass
class Run:
    peer: str
    steps: dict
    out: Path
    datastore_dir: Path
    sources: dict[str, str]  # datastore path -> sha256 of the file before the run
    oracle: dict[int, str] = field(default_factory=dict)  # lab: device key -> content sha256
    oracle_after: dict[int, str] = field(default_factory=dict)

    def __getitem__(self, step: str) -> dict:
        return self.steps[step]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run_lab(tmp: Path) -> Run:
    vm, ds = "web01", "datastore1"
    downloads = [f"{vm}/{vm}.vmx", f"{vm}/{vm}-flat.vmdk", f"{vm}/{vm}.nvram"]
    with start_lab(tmp / "lab", disk_size="8M") as lab:
        info = lab.info
        ds_dir = Path(info["datastores"][ds])
        client = LabClient(info)
        sources = {p: _sha(ds_dir / p) for p in downloads}
        # The battery writes nothing into the guest: every state it exports has this content.
        oracle = {k: client.oracle(vm=vm, key=k)["sha256"] for k in (2000, 2001)}
        steps = run_battery(
            host=info["host"],
            port=int(info["https_port"]),
            user=info["user"],
            password=lab.password,
            ca_file=info["cert_file"],
            vm_path=f"/{info['datacenter']}/vm/{vm}",
            out=tmp / "lab-out",
            downloads=downloads,
        )
        after = {k: client.oracle(vm=vm, key=k)["sha256"] for k in (2000, 2001)}
        return Run("lab", steps, tmp / "lab-out", ds_dir, sources, oracle, after)


def _run_vcsim(tmp: Path) -> Run:
    proc, info = start_vcsim(tmp / "vcsim")
    try:
        vm = "DC0_H0_VM0"
        ds_dir = Path(info["datastores"]["LocalDS_0"])
        downloads = [f"{vm}/{vm}.vmx", f"{vm}/disk1-flat.vmdk", f"{vm}/{vm}.nvram"]
        # vcsim's files are empty: give each distinct bytes to compare.
        for n, p in enumerate(downloads):
            (ds_dir / p).write_bytes(os.urandom(4096 * (n + 1) + 17))
        sources = {p: _sha(ds_dir / p) for p in downloads}
        steps = run_battery(
            host=info["host"],
            port=int(info["port"]),
            user=info["user"],
            password=info["password"],
            ca_file=info["cert_file"],
            vm_path=f"/{info['datacenter']}/vm/{vm}",
            out=tmp / "vcsim-out",
            downloads=downloads,
        )
        # The uploads are checked on disk while vcsim (and its datastore directory) lives.
        for rel in ("vcbproxy-battery/streamed.bin", "vcbproxy-battery/sized.bin"):
            sources[rel] = _sha(ds_dir / rel)
        return Run("vcsim", steps, tmp / "vcsim-out", ds_dir, sources)
    finally:
        stop_vcsim(proc)


@pytest.fixture(scope="module", params=["lab", "vcsim"])
def run(request, tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp(f"battery-{request.param}")
    return _run_lab(tmp) if request.param == "lab" else _run_vcsim(tmp)


# -- on both peers -------------------------------------------------------------------------


def test_every_step_runs_to_its_end(run):
    assert list(run.steps) == STEPS, (run.peer, list(run.steps))
    broken = {s: f.get("error") for s, f in run.steps.items() if not f["ok"]}
    assert not broken, (run.peer, broken)


def test_session_records_the_clients_user_agent(run):
    assert run["login"]["user_agent"] == USER_AGENT
    assert run["events"]["login_event_has_user_agent"] is True


def test_finding_the_vm_four_ways(run):
    path = run["find_by_path"]
    assert path["inventory_path"].endswith("/vm/" + path["inventory_path"].rsplit("/", 1)[-1])
    assert path["datacenter"].startswith("/")
    for step in ("find_by_name", "find_by_uuid", "find_by_ip"):
        assert run[step]["same"] is True, step


def test_references_and_enums_inside_anytype_decode(run):
    """parent (a reference in anyType) and runtime.powerState (an enum) come through."""
    props = run["properties"]
    assert props["parent"].startswith("Folder:")
    assert props["power_state"] == "poweredOn"
    assert props["resource_pool"] and props["datastore"]
    assert run["snapshot_create"]["snapshot"].startswith("VirtualMachineSnapshot:")


def test_host_pool_and_network_properties(run):
    props = run["properties"]
    assert props["host_product"] == "VMware ESXi" and props["host_product_version"]
    assert props["host_config_product"] == "embeddedEsx"
    assert props["host_memory_usage_mb"] > 0
    assert props["pool_status"] == "green" and props["pool_cpu_max"] > 0
    assert props["pool_cpu_shares_level"]
    assert props["networks"] and props["nics"] == 1


def test_empty_results_are_empty_not_faults(run):
    empty = run["empty_results"]
    assert empty["retrieve_properties"] == 0
    assert empty["unset_snapshot_nil"] is True


def test_folder_downloads_equal_the_source_files(run):
    """object.Datastore.Download (dcPath with govmomi's leading slash) brings the bytes."""
    assert run["properties"]["datastore_dc_path"].startswith("/")
    got = run["download"]["files"]
    assert set(got) == {p for p in run.sources if not p.startswith("vcbproxy-battery/")}
    for rel, fact in got.items():
        assert fact["sha256"] == run.sources[rel], rel
        assert _sha(run.out / "folder" / rel) == run.sources[rel], rel


def test_folder_uploads_chunked_and_sized(run):
    """Datastore.Upload of a stream (chunked, no Content-Length) and UploadFile (sized)."""
    up = run["upload"]
    payload = (run.out / "upload.bin").read_bytes()
    assert up["sha256"] == hashlib.sha256(payload).hexdigest() and up["size"] == len(payload)
    assert up["streamed_roundtrip"] is True and up["sized_roundtrip"] is True
    for key in ("streamed_path", "sized_path"):
        rel = up[key]
        on_disk = run.sources.get(rel) or _sha(run.datastore_dir / rel)
        assert on_disk == up["sha256"], rel


def test_snapshot_tree_and_removal(run):
    walk = run["snapshot_walk"]
    assert walk["tree"] == ["battery-1|poweredOn"]
    assert walk["current_is_new"] is True and walk["found_by_name"] is True
    assert run["snapshot_remove"]["snapshots_left"] is False


def test_power_unregister_register(run):
    assert run["power_off"]["power_state"] == "poweredOff"
    assert run["unregister"]["still_found"] is False
    assert run["register"]["found_by_path"] is True
    assert run["power_on"]["power_state"] == "poweredOn"


def test_events_of_the_run(run):
    kinds = set(run["events"]["datacenter_events"])
    assert {"VmPoweredOffEvent", "VmPoweredOnEvent", "VmReconfiguredEvent"} <= kinds
    assert "VmRemovedEvent" in kinds  # the unregister
    assert run["events"]["login_events"] >= 1


def test_terminated_and_logged_out_sessions_are_gone(run):
    term = run["terminate_session"]
    assert term["still_active"] is False and term["terminated_fault"] == "NotAuthenticated"
    assert run["logout"]["after_logout_fault"] == "NotAuthenticated"


def test_datastore_browser_lists_the_vm_folder(run):
    browse = run["browse_datastore"]
    vm_dir = browse["folder"].split("] ", 1)[1]
    files = browse["files"]
    assert files[f"{vm_dir}.vmx"]["type"] == "VmConfigFileInfo"
    nvram = files[f"{vm_dir}.nvram"]
    assert nvram["type"] == "VmNvramFileInfo"
    assert nvram["size"] == (run.out / "folder" / vm_dir / f"{vm_dir}.nvram").stat().st_size
    assert any(entry.split("|")[1] == f"{vm_dir}.vmx" for entry in browse["vmx_files"])


# -- where the peers differ: the lab follows the reference, vcsim is pinned ----------------


def test_empty_retrieve_properties_ex_is_unset(run):
    """API reference, RetrievePropertiesEx: "null if there are no matching objects"."""
    expected = {"lab": True, "vcsim": False}  # vcsim: an empty RetrieveResult
    assert run["empty_results"]["retrieve_properties_ex_nil"] is expected[run.peer]


def test_root_snapshot_property(run):
    """VirtualMachine.rootSnapshot lists the roots of the snapshot tree."""
    expected = {"lab": 1, "vcsim": 0}  # vcsim 0.24 leaves rootSnapshot unset
    assert run["snapshot_walk"]["root_snapshots"] == expected[run.peer]


def test_sub_folder_search_paths(run):
    """SearchDatastoreSubFolders: folderPath is a datastore path, "[ds] folder"."""
    entries = run["browse_datastore"]["vmx_files"]
    folders = {e.split("|")[0] for e in entries}
    if run.peer == "lab":
        assert all("] " in f for f in folders), folders
        assert {e.split("|")[2] for e in entries} == {"FileInfo"}  # details.fileType unset
    else:  # vcsim joins "[LocalDS_0]" and the folder with a slash: not a datastore path
        assert all(f.startswith("[LocalDS_0]/") for f in folders), folders


def test_extent_files_are_not_disks(run):
    """The datastore browser's VmDiskFileInfo is a virtual disk (its descriptor); a
    "-flat.vmdk" extent is a plain file of it."""
    browse = run["browse_datastore"]
    flat = next(n for n in browse["files"] if n.endswith("-flat.vmdk"))
    expected = {"lab": "FileInfo", "vcsim": "VmDiskFileInfo"}  # vcsim types every .vmdk as a disk
    assert browse["files"][flat]["type"] == expected[run.peer]
    assert browse["files"][flat.removesuffix("-flat.vmdk") + ".vmdk"]["type"] == "VmDiskFileInfo"


def test_cbt_through_extra_config_starts_at_the_stun(run):
    """VDDK guide: ctkEnabled / scsiX:Y.ctkEnabled enable CBT; a running VM starts tracking
    at its next stun/unstun (here the snapshot), so the change ID appears only then."""
    cbt = run["cbt_enable"]
    assert cbt["extra_config"].get("ctkEnabled") == "TRUE"
    if run.peer == "lab":
        assert cbt["change_tracking_enabled"] is True
        assert cbt["change_id_before_stun"] == ""
        assert cbt["change_id_after_stun"].endswith("/0")
    else:  # vcsim keeps extraConfig as text: no changeTrackingEnabled, no change IDs
        assert "change_tracking_enabled" not in cbt
        assert cbt["change_id_after_stun"] == ""


def test_changed_disk_areas(run):
    """QueryChangedDiskAreas "*" and since a change ID; without a snapshot only on a
    powered-off VM (API reference)."""
    everything, since = run["cbt_query_all"], run["cbt_query_since"]
    if run.peer == "lab":
        capacity = run["properties"]["disk_capacity"]
        assert everything["fault"] == "" and everything["covered"] == capacity
        assert 0 < everything["bytes"] < capacity and everything["areas"] > 0
        assert everything["no_snapshot_running_fault"] == "InvalidArgument"
        assert since["fault"] == "" and since["areas"] == 0  # the guest wrote nothing
        assert (since["start"], since["length"]) == (0, capacity)
    else:  # not implemented by vcsim; without change IDs govmomi does not even ask
        assert everything["fault"] == "MethodNotFound"
        assert everything["no_snapshot_running_fault"] == "MethodNotFound"
        assert since["fault"] == "NoChangeId"


def test_history_collector_for_tasks(run):
    tasks = run["task_collector"]
    assert tasks["recent_tasks"] > 0
    if run.peer == "lab":
        assert tasks["fault"] == "" and tasks["latest_page"] > 0
        assert "VirtualMachine.powerOn" in tasks["task_kinds"]
    else:
        assert tasks["fault"] == "MethodNotFound"


def _decode(vmdk: Path, tmp: Path) -> str:
    raw = tmp / (vmdk.name + ".raw")
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(vmdk), str(raw)],
        check=True,
        capture_output=True,
    )
    return _sha(raw)


def test_exports_through_nfc_lease(run, tmp_path):
    """ExportSnapshot and ExportVm through nfc.Lease with progress: on the lab each disk is a
    streamOptimized VMDK whose content is the lab's oracle; the VM cannot be powered off
    while the lease is ready; disk entries carry no fileSize, so govmomi sizes items from
    totalDiskCapacityInKB; CreateDescriptor gives an OVF govmomi parses."""
    snap, whole = run["export_snapshot"], run["export_vm"]
    if run.peer == "vcsim":  # vcsim implements neither export nor OvfManager.CreateDescriptor
        assert snap["fault"] == "MethodNotFound" and whole["fault"] == "MethodNotFound"
        return
    need("qemu-img")
    assert run.oracle == run.oracle_after
    for step, directory in ((snap, "export-snapshot"), (whole, "export-vm")):
        assert step["fault"] == "" and step["lease_items"] == 2
        assert step["lease_device_file_sizes"] == [0, 0]
        assert step["lease_item_sizes"] == [step["lease_total_kb"] * 1024] * 2
        assert step["progress_reports"] > 0
        for n, key in enumerate((2000, 2001)):
            vmdk = run.out / directory / f"disk-{n}.vmdk"
            assert _sha(vmdk) == step["sha256"][n]
            assert _decode(vmdk, tmp_path) == run.oracle[key], (directory, key)
    assert snap["power_off_during_lease_fault"] == "TaskInProgress"
    assert whole["descriptor_fault"] == "" and whole["ovf_errors"] == 0
    assert whole["ovf_files"] == 2 and whole["ovf_name"] == "web01"
    assert whole["ovf_disk_capacities"] == [str(run["properties"]["disk_capacity"])] * 2
