package cloudhypervisor

// Request and response bodies of Cloud Hypervisor's REST API, typed after
// its OpenAPI description (cloud-hypervisor.yaml, API version 0.3.0). Only
// the fields the VM backend sets are declared; omitempty keeps unset
// optional fields out of the request so the VMM applies its defaults.

// VmmPingResponse is the answer to GET /vmm.ping.
type VmmPingResponse struct {
	BuildVersion string   `json:"build_version,omitempty"`
	Version      string   `json:"version"`
	Pid          int64    `json:"pid,omitempty"`
	Features     []string `json:"features,omitempty"`
}

// VmInfo is the answer to GET /vm.info.
type VmInfo struct {
	Config           VmConfig `json:"config"`
	State            string   `json:"state"`
	MemoryActualSize int64    `json:"memory_actual_size,omitempty"`
}

// PayloadConfig is what the guest boots.
type PayloadConfig struct {
	Firmware  string `json:"firmware,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	Cmdline   string `json:"cmdline,omitempty"`
	Initramfs string `json:"initramfs,omitempty"`
}

// CpusConfig sizes the vCPUs.
type CpusConfig struct {
	BootVcpus int `json:"boot_vcpus"`
	MaxVcpus  int `json:"max_vcpus"`
}

// MemoryConfig sizes guest memory (bytes); Shared is needed by virtio-fs.
type MemoryConfig struct {
	Size   int64 `json:"size"`
	Shared bool  `json:"shared,omitempty"`
}

// DiskConfig is a block device.
type DiskConfig struct {
	Path     string `json:"path,omitempty"`
	Readonly bool   `json:"readonly,omitempty"`
	ID       string `json:"id,omitempty"`
}

// NetConfig is a network device on a tap.
type NetConfig struct {
	Tap       string `json:"tap,omitempty"`
	IP        string `json:"ip,omitempty"`
	Mask      string `json:"mask,omitempty"`
	Mac       string `json:"mac,omitempty"`
	Mtu       int    `json:"mtu,omitempty"`
	NumQueues int    `json:"num_queues,omitempty"`
	QueueSize int    `json:"queue_size,omitempty"`
	ID        string `json:"id,omitempty"`
}

// FsConfig is a virtio-fs device backed by a vhost-user socket (virtiofsd).
type FsConfig struct {
	Tag       string `json:"tag"`
	Socket    string `json:"socket"`
	NumQueues int    `json:"num_queues"`
	QueueSize int    `json:"queue_size"`
	ID        string `json:"id,omitempty"`
}

// ConsoleConfig routes the serial port or virtio console.
type ConsoleConfig struct {
	Mode string `json:"mode"`
	File string `json:"file,omitempty"`
}

// VsockConfig is the hybrid vsock device: guest AF_VSOCK is proxied to a
// unix socket on the host.
type VsockConfig struct {
	Cid    int64  `json:"cid"`
	Socket string `json:"socket"`
	ID     string `json:"id,omitempty"`
}

// VmConfig is the body of PUT /vm.create.
type VmConfig struct {
	Cpus    *CpusConfig    `json:"cpus,omitempty"`
	Memory  *MemoryConfig  `json:"memory,omitempty"`
	Payload PayloadConfig  `json:"payload"`
	Disks   []DiskConfig   `json:"disks,omitempty"`
	Net     []NetConfig    `json:"net,omitempty"`
	Fs      []FsConfig     `json:"fs,omitempty"`
	Serial  *ConsoleConfig `json:"serial,omitempty"`
	Console *ConsoleConfig `json:"console,omitempty"`
	Vsock   *VsockConfig   `json:"vsock,omitempty"`
	// LandlockEnable confines the VMM's file access with Landlock to the
	// paths of this config plus LandlockRules.
	LandlockEnable bool             `json:"landlock_enable,omitempty"`
	LandlockRules  []LandlockConfig `json:"landlock_rules,omitempty"`
}

// LandlockConfig is one extra Landlock rule: a path and its access
// ("r", "w" or "rw").
type LandlockConfig struct {
	Path   string `json:"path"`
	Access string `json:"access"`
}

// PciDeviceInfo is the answer to a hot-plug request.
type PciDeviceInfo struct {
	ID  string `json:"id"`
	BDF string `json:"bdf"`
}

// VmSnapshotConfig is the body of PUT /vm.snapshot: where the snapshot
// (config.json, state.json, memory-ranges) is written, a "file://" URL
// of an existing directory.
type VmSnapshotConfig struct {
	DestinationURL string `json:"destination_url"`
}

// RestoreConfig is the body of PUT /vm.restore. SourceURL is the
// snapshot's directory ("file://..."); Prefault faults all guest memory
// in at restore; Resume runs the VM at once (the driver resumes it with
// vm.resume instead, after checking the restore). MemoryRestoreMode
// (Copy, the default, or OnDemand) is left to the VMM.
type RestoreConfig struct {
	SourceURL         string `json:"source_url"`
	Prefault          bool   `json:"prefault"`
	Resume            bool   `json:"resume"`
	MemoryRestoreMode string `json:"memory_restore_mode,omitempty"`
}
