//! The man pages and shell completions of `sivshm-host` and `sivshmctl`, made from the clap
//! definitions their binaries parse with (`sivshm_host::cli::Cli`, `sivshmctl::args::Cli`).
//! They are checked in under `packaging/man/` and `packaging/completions/`; the test
//! `tests/generated.rs` fails when they differ from what the definitions make now.
//!
//! Regenerate with `cargo run -p sivshm-gen-docs` (see [`REGENERATE`]).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// How to bring the checked-in files up to date, as the check prints it.
pub const REGENERATE: &str = "cargo run -p sivshm-gen-docs";

/// The folders, relative to the repository, that hold the generated files and nothing else.
pub const DIRS: [&str; 2] = ["packaging/man", "packaging/completions"];

/// The repository's top folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The commands documented: sivshm-host (the host product) and sivshmctl (the guest command).
pub fn commands() -> Vec<Command> {
    vec![
        sivshm_host::cli::Cli::command(),
        sivshmctl::args::Cli::command(),
    ]
}

/// Every generated file: its path relative to the repository, and its contents.
pub fn generate() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for cmd in commands() {
        let name = cmd.get_name().to_string();
        man_pages(cmd.clone(), &mut files);
        for (shell, file) in [
            (Shell::Bash, format!("bash/{name}")),
            (Shell::Zsh, format!("zsh/_{name}")),
            (Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut out);
            files.insert(Path::new("packaging/completions").join(file), out);
        }
    }
    files
}

/// One page for the command (`sivshmctl.1`) and one for each subcommand
/// (`sivshmctl-list.1`), as `clap_mangen::generate_to` names them, without the `help`
/// subcommand. Every page's footer names the command and its version (`sivshmctl 0.1.0`).
fn man_pages(cmd: Command, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    fn page(cmd: Command, source: &str, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            page(sub.clone(), source, files);
        }
        let man = clap_mangen::Man::new(cmd).source(source).manual("sivshm");
        let mut out = Vec::new();
        man.render(&mut out).expect("rendering into memory");
        files.insert(Path::new("packaging/man").join(man.get_filename()), out);
    }
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    page(cmd, &source, files);
}

/// Every file under [`DIRS`] in `root`, relative to it.
fn checked_in(root: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let entries = match std::fs::read_dir(root.join(dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let rel = dir.join(e.file_name());
            if e.file_type()?.is_dir() {
                walk(root, &rel, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for d in DIRS {
        walk(root, Path::new(d), &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// What differs between the generated files and those under `root`: one line each
/// (missing, stale or not generated at all); empty when they agree.
pub fn differences(root: &Path) -> io::Result<Vec<String>> {
    let files = generate();
    let mut diffs = Vec::new();
    for (path, want) in &files {
        match std::fs::read(root.join(path)) {
            Ok(got) if &got == want => {}
            Ok(_) => diffs.push(format!(
                "{}: differs from what the definition makes",
                path.display()
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                diffs.push(format!("{}: missing", path.display()))
            }
            Err(e) => return Err(e),
        }
    }
    for path in checked_in(root)? {
        if !files.contains_key(&path) {
            diffs.push(format!(
                "{}: not generated (a page or command that is gone?)",
                path.display()
            ));
        }
    }
    Ok(diffs)
}

/// Writes the generated files under `root` and removes files under [`DIRS`] that are no
/// longer generated. Returns the paths written.
pub fn write(root: &Path) -> io::Result<Vec<PathBuf>> {
    let files = generate();
    for path in checked_in(root)? {
        if !files.contains_key(&path) {
            std::fs::remove_file(root.join(&path))?;
        }
    }
    for (path, contents) in &files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("a file in a folder"))?;
        std::fs::write(&p, contents)?;
    }
    Ok(files.into_keys().collect())
}
