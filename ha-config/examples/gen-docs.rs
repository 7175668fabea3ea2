//! Prints the configuration reference, generated from the schema:
//! `cargo run -p ha-config --example gen-docs > docs/CONFIG.md`

fn main() {
    print!("{}", ha_config::reference_markdown());
}
