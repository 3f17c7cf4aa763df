//! `sivshm-gen-docs [--check] [ROOT]`: writes the man pages and shell completions of
//! sivshm-host and sivshmctl into ROOT's (default: this repository's) `packaging/man/` and
//! `packaging/completions/`; with `--check`, writes nothing and exits 1 if they differ.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut root = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: sivshm-gen-docs [--check] [ROOT]");
                return ExitCode::SUCCESS;
            }
            _ if root.is_none() && !a.starts_with('-') => root = Some(PathBuf::from(a)),
            _ => {
                eprintln!("usage: sivshm-gen-docs [--check] [ROOT]");
                return ExitCode::from(2);
            }
        }
    }
    let root = root.unwrap_or_else(sivshm_gen_docs::repo_root);
    let result = if check {
        sivshm_gen_docs::differences(&root).map(|diffs| {
            for d in &diffs {
                eprintln!("sivshm-gen-docs: {d}");
            }
            if !diffs.is_empty() {
                eprintln!(
                    "sivshm-gen-docs: regenerate with `{}`",
                    sivshm_gen_docs::REGENERATE
                );
            }
            diffs.is_empty()
        })
    } else {
        sivshm_gen_docs::write(&root).map(|written| {
            for p in written {
                println!("{}", p.display());
            }
            true
        })
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sivshm-gen-docs: {e}");
            ExitCode::FAILURE
        }
    }
}
