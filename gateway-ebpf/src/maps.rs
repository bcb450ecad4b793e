//! Every map of the data path, named and typed as `gateway_common` declares them.
//!
//! None carries a pinning flag: aya's `EbpfLoader::map_pin_path` pins (or reuses) a map by name
//! whatever its flag, so the daemon chooses the directory, while tests and benchmarks load fresh
//! private maps (a by-name flag would pin them in /sys/fs/bpf behind their back).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use gateway_common::{
    Action, ArpClaim, Backend, Conn, Counter, FlowKey, HomeHop, HomeKey, Iface, Path, RateWindow,
    Reason, Reply, Service, ServiceKey, Settings, Vip, CONN_TABLE_SIZE, MAGLEV_ENTRIES,
    MAX_BACKENDS, MAX_IFACES, MAX_PEER_ADDRS, MAX_SERVICES, MAX_VIPS, PORTS,
};

#[map]
pub static IFACES: HashMap<u32, Iface> = HashMap::with_max_entries(MAX_IFACES, 0);
#[map]
pub static VIPS: HashMap<u32, Vip> = HashMap::with_max_entries(MAX_VIPS, 0);
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);
#[map]
pub static MAGLEV: Array<u32> = Array::with_max_entries(MAGLEV_ENTRIES, 0);
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);
#[map]
pub static CONNS: LruHashMap<FlowKey, Conn> = LruHashMap::with_max_entries(CONN_TABLE_SIZE, 0);
#[map]
pub static REPLIES: LruHashMap<FlowKey, Reply> = LruHashMap::with_max_entries(CONN_TABLE_SIZE, 0);
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
pub static RATE: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static ACTIONS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Action::COUNT, 0);
#[map]
pub static PATHS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Path::COUNT, 0);
#[map]
pub static REASONS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);
#[map]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);
#[map]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
#[map]
pub static LEASE: Array<u64> = Array::with_max_entries(1, 0);
#[map]
pub static ARP_CLAIMS: LruHashMap<u32, ArpClaim> = LruHashMap::with_max_entries(MAX_VIPS, 0);
#[map]
pub static PEERS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PEER_ADDRS, 0);
#[map]
pub static NAT_HOMES: Array<u32> = Array::with_max_entries(PORTS, 0);
#[map]
pub static HOME_HOPS: HashMap<HomeKey, HomeHop> = HashMap::with_max_entries(MAX_PEER_ADDRS, 0);
