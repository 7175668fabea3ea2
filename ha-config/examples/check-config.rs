//! What `hsm-proxy check-config FILE` does: load and validate FILE with the
//! process environment's `HSM_PROXY__…` overrides, then print the effective
//! configuration (exit 0) or every error (exit 1).
//!
//! `cargo run -p ha-config --example check-config -- FILE`

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: check-config FILE");
        std::process::exit(2);
    };
    let report = ha_config::check_config(std::path::Path::new(&path));
    if report.exit_code == 0 {
        print!("{}", report.text);
    } else {
        eprint!("{}", report.text);
    }
    std::process::exit(report.exit_code);
}
