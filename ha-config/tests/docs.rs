//! `docs/CONFIG.md` is generated from the schema; this test fails when the
//! two differ. Regenerate with
//! `cargo run -p ha-config --example gen-docs > docs/CONFIG.md`, or run this
//! test with `UPDATE_DOCS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn docs_config_md_is_what_the_schema_generates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md");
    let generated = ha_config::reference_markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != generated {
        let line = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()))
            + 1;
        panic!(
            "docs/CONFIG.md is out of date with the schema (first difference at line {line}).\n\
             Regenerate it: `{}` (or `UPDATE_DOCS=1 cargo test -p ha-config --test docs`)",
            ha_config::REGENERATE
        );
    }
}
