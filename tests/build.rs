//! Compiles the test-only probe service with protox, as `baladiya-proto` does.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let probe_root = manifest.join("proto");
    let shared_root = manifest.join("../proto");
    println!("cargo:rerun-if-changed={}", probe_root.display());

    let mut compiler = protox::Compiler::new([&probe_root, &shared_root])?;
    compiler.include_imports(false).include_source_info(true);
    compiler.open_files(["baladiya/probe/v1/probe.proto"])?;
    std::fs::write(
        out_dir.join("probe_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // Code generation needs the imported messages too; their modules are
    // generated but unused (the probe refers to them by extern path).
    compiler.include_imports(true);

    let mut config = prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");
    tonic_prost_build::configure()
        .extern_path(".baladiya.events.v1", "::baladiya_proto::events::v1")
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}
