//! Compiles every schema under `proto/` with protox (a pure-Rust protobuf
//! compiler) and prost-build, so no system `protoc` is needed.
//!
//! Besides the prost code it writes two files to `OUT_DIR`:
//! * `criu-descriptors.bin`: the encoded `FileDescriptorSet`, custom field
//!   options included, for tools that print images by reflection;
//! * `schema.rs`: for every message, its required field numbers and the
//!   message type of each sub-message field, used to reject entries that lack
//!   a required field (prost does not check them).

use std::fmt::Write as _;
use std::path::PathBuf;

use protox::prost_reflect::{Cardinality, DescriptorPool, Kind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let mut compiler = protox::Compiler::new([&dir])?;
    compiler.include_imports(true);
    compiler.open_files(&files)?;
    std::fs::write(
        out.join("criu-descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let pool = compiler.descriptor_pool();
    std::fs::write(out.join("schema.rs"), schema_table(&pool))?;

    // google/protobuf/descriptor.proto is only there for opts.proto's
    // extension; prost maps it to prost-types, so do not generate it.
    let mut fds = compiler.file_descriptor_set();
    fds.file
        .retain(|f| !f.package().starts_with("google.protobuf"));
    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(fds)?;
    Ok(())
}

/// Renders a sorted static table `(message, required numbers, sub-messages)`.
fn schema_table(pool: &DescriptorPool) -> String {
    let mut msgs: Vec<_> = pool
        .all_messages()
        .filter(|m| m.package_name().starts_with("criu."))
        .collect();
    msgs.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    let mut s = String::from("&[\n");
    for m in msgs {
        let required: Vec<String> = m
            .fields()
            .filter(|f| f.cardinality() == Cardinality::Required)
            .map(|f| f.number().to_string())
            .collect();
        let subs: Vec<String> = m
            .fields()
            .filter_map(|f| match f.kind() {
                Kind::Message(sub) => Some(format!("({}, {:?})", f.number(), sub.full_name())),
                _ => None,
            })
            .collect();
        let names: Vec<String> = m
            .fields()
            .map(|f| format!("({}, {:?})", f.number(), f.name()))
            .collect();
        writeln!(
            s,
            "    MessageSchema {{ name: {:?}, required: &[{}], messages: &[{}], names: &[{}] }},",
            m.full_name(),
            required.join(", "),
            subs.join(", "),
            names.join(", "),
        )
        .expect("writing to a String cannot fail");
    }
    s.push(']');
    s
}
