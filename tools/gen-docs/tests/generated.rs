//! The checked-in man pages and completions are what the clap definitions make now, and the
//! pages render with the system's man (or groff) and name every subcommand.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use sivshm_gen_docs::{commands, differences, generate, repo_root, REGENERATE};

#[test]
fn checked_in_pages_and_completions_are_up_to_date() {
    let diffs = differences(&repo_root()).expect("reading packaging/");
    assert!(
        diffs.is_empty(),
        "packaging/man or packaging/completions is out of date with the command line \
         definitions:\n  {}\nregenerate with `{REGENERATE}` and commit the result",
        diffs.join("\n  ")
    );
}

#[test]
fn every_command_and_subcommand_has_a_page_and_every_shell_a_completion() {
    let files = generate();
    for cmd in commands() {
        let name = cmd.get_name();
        let mut want = vec![
            format!("packaging/man/{name}.1"),
            format!("packaging/completions/bash/{name}"),
            format!("packaging/completions/zsh/_{name}"),
            format!("packaging/completions/fish/{name}.fish"),
        ];
        want.extend(
            cmd.get_subcommands()
                .map(|s| format!("packaging/man/{name}-{}.1", s.get_name())),
        );
        for w in want {
            assert!(files.contains_key(Path::new(&w)), "{w} is not generated");
        }
    }
    assert!(!files.keys().any(|p| p.to_string_lossy().contains("-help.")));
}

/// The page as text, by `man -l` or else groff; `None` when the machine has neither.
fn render(page: &Path) -> Option<String> {
    let man = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "300")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env_remove("MAN_KEEP_FORMATTING")
        .output();
    let groff = || {
        Command::new("groff")
            .args(["-man", "-Tutf8", "-rLL=300n", "-P-cbu"])
            .arg(page)
            .output()
    };
    let out = match man {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => o,
        Ok(_) | Err(_) => match groff() {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => panic!("groff: {e}"),
        },
    };
    assert!(
        out.status.success(),
        "rendering {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8 text"))
}

#[test]
fn pages_render_and_name_every_subcommand() {
    let dir = repo_root().join("packaging/man");
    let mut rendered = 0;
    for cmd in commands() {
        let name = cmd.get_name();
        let subs: Vec<&str> = cmd
            .get_subcommands()
            .map(|s| s.get_name())
            .filter(|s| *s != "help")
            .collect();
        let Some(top) = render(&dir.join(format!("{name}.1"))) else {
            eprintln!("SKIPPED: neither man nor groff is installed: the pages were not rendered");
            return;
        };
        rendered += 1;
        for section in ["NAME", "SYNOPSIS", "SUBCOMMANDS"] {
            assert!(top.contains(section), "{name}.1 has no {section}:\n{top}");
        }
        for sub in &subs {
            assert!(
                top.contains(&format!("{name}-{sub}(1)")),
                "{name}.1 does not name {sub}:\n{top}"
            );
            let page = format!("{name}-{sub}.1");
            let text = render(&dir.join(&page)).expect("rendered the top page");
            rendered += 1;
            assert!(
                text.contains(&format!("{name} {sub}")),
                "{page} has no synopsis `{name} {sub} ...`:\n{text}"
            );
        }
    }
    assert!(rendered > 2);
}

/// groff, where there is one, finds nothing to warn of (-ww: every warning).
#[test]
fn pages_are_warning_free_roff() {
    let dir = repo_root().join("packaging/man");
    for page in generate().keys().filter(|p| p.starts_with("packaging/man")) {
        let page = dir.join(page.file_name().unwrap());
        let out = match Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(&page)
            .output()
        {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                eprintln!(
                    "SKIPPED: groff is not installed: the pages were not checked for warnings"
                );
                return;
            }
            Err(e) => panic!("groff: {e}"),
        };
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff warns of {}: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
