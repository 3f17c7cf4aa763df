//! Where `unsafe` may live, as the documents say (Documentation/driver.rst, channel.rst,
//! host-and-tests.rst): in the module, only in `abstractions/`; in user space, only in
//! `lib/src/mapping.rs`, `lib/src/sys.rs`, `lab/src/qemu/supervise.rs` (the child's `pre_exec`),
//! `capi/src/` (the C API's entry points: the caller's pointers and descriptors) and
//! `samples/probe/src/link.rs` (the rtrb reference commits a chunk it wrote whole).
//! Every `unsafe` block or impl has a `// SAFETY:` comment directly above it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() {
            if name != "target" && name != "build" && name != ".git" {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// What an unsafe block and an unsafe impl start with (spelt in two halves, so that this file,
/// which names them, is not taken for one that has them).
const BLOCK: &str = concat!("un", "safe {");
const IMPL: &str = concat!("un", "safe impl");

/// The line numbers of `unsafe` outside comments, and those of them that are blocks or impls
/// without a `// SAFETY:` comment directly above (attributes may stand between).
fn scan(text: &str) -> (Vec<usize>, Vec<usize>) {
    let (mut all, mut unargued) = (Vec::new(), Vec::new());
    let mut argued = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("//") {
            if t.contains("SAFETY") {
                argued = true;
            }
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        let has = code
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == "unsafe");
        if has {
            all.push(i + 1);
            let block_or_impl = code.contains(BLOCK) || code.contains(IMPL);
            if block_or_impl && !argued && !code.contains("SAFETY") {
                unargued.push(i + 1);
            }
        }
        if !t.starts_with("#[") {
            argued = false;
        }
    }
    (all, unargued)
}

#[test]
fn unsafe_lives_only_where_the_documents_say_and_is_argued() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 20, "found only {} Rust files", files.len());
    let allowed_user_space = [
        "lib/src/mapping.rs",
        "lib/src/sys.rs",
        "lab/src/qemu/supervise.rs",
        "samples/probe/src/link.rs",
    ];
    let mut bad = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("host/tests/unsafe_placement.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let (all, unargued) = scan(&text);
        for l in unargued {
            bad.push(format!(
                "{rel}:{l}: unsafe without a // SAFETY: comment above it"
            ));
        }
        if all.is_empty() {
            continue;
        }
        let module = rel == "sivshm.rs" || rel.starts_with("driver/");
        let allowed = rel.starts_with("abstractions/")
            || rel.starts_with("capi/src/")
            || allowed_user_space.contains(&rel.as_str());
        if module || !allowed {
            for l in all {
                bad.push(format!(
                    "{rel}:{l}: unsafe outside the places the documents name"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_scan_finds_what_it_must() {
    let bare = format!("fn f() {{\n    {BLOCK} g() }};\n}}\n");
    let (all, unargued) = scan(&bare);
    assert_eq!((all, unargued), (vec![2], vec![2]));
    let ok = format!(
        "// SAFETY: g has no precondition.\n{BLOCK} g() }};\n// SAFETY: Send.\n#[allow(x)]\n{IMPL} Send for X {{}}\n"
    );
    assert_eq!(scan(&ok), (vec![2, 5], vec![]));
    assert_eq!(
        scan("// unsafe in a comment\nlet s = 1; // unsafe here too\n"),
        (vec![], vec![])
    );
    assert_eq!(scan("pub unsafe fn f() {}\n").0, vec![1]);
}
