//! `crit`: decode, encode and explore CRIU images.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(criu_crit::cli::main_with(&args));
}
