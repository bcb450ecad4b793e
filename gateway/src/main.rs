fn main() {
    println!("{}", gateway::ebpf_object::BYTES.len());
}
