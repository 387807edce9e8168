//! Generates the wire types from `proto/`, the source of truth for both sides.

fn main() {
    let protos = ["../../proto/relay.proto", "../../proto/content.proto"];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    prost_build::Config::new()
        .compile_protos(&protos, &["../../proto"])
        .expect("proto/ files are valid protobuf");
}
