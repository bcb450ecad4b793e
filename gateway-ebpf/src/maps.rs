//! Every map of the data path, named and typed as `gateway_common` declares them. All are
//! pinned by name so a restarted daemon finds them again (the daemon chooses the directory).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use gateway_common::{
    Action, Backend, Conn, Counter, FlowKey, Iface, Path, RateWindow, Reason, Reply, Service,
    ServiceKey, Settings, Vip, CONN_TABLE_SIZE, MAGLEV_ENTRIES, MAX_BACKENDS, MAX_IFACES,
    MAX_SERVICES, MAX_VIPS,
};

#[map]
pub static IFACES: HashMap<u32, Iface> = HashMap::pinned(MAX_IFACES, 0);
#[map]
pub static VIPS: HashMap<u32, Vip> = HashMap::pinned(MAX_VIPS, 0);
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::pinned(MAX_SERVICES, 0);
#[map]
pub static MAGLEV: Array<u32> = Array::pinned(MAGLEV_ENTRIES, 0);
#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);
#[map]
pub static CONNS: LruHashMap<FlowKey, Conn> = LruHashMap::pinned(CONN_TABLE_SIZE, 0);
#[map]
pub static REPLIES: LruHashMap<FlowKey, Reply> = LruHashMap::pinned(CONN_TABLE_SIZE, 0);
#[map]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);
#[map]
pub static RATE: PerCpuArray<RateWindow> = PerCpuArray::pinned(1, 0);
#[map]
pub static ACTIONS: PerCpuArray<Counter> = PerCpuArray::pinned(Action::COUNT, 0);
#[map]
pub static PATHS: PerCpuArray<Counter> = PerCpuArray::pinned(Path::COUNT, 0);
#[map]
pub static REASONS: PerCpuArray<Counter> = PerCpuArray::pinned(Reason::COUNT, 0);
#[map]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_SERVICES, 0);
#[map]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_BACKENDS, 0);
