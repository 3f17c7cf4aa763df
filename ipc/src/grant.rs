//! Which services a worker may see and publish: a list of name patterns.
//!
//! Service names are `/`-separated paths. In a pattern `*` stands for any characters within
//! one segment, `?` for one character other than `/`, and a `**` segment for any number of
//! whole segments (none included): `jobs/w0/**` grants `jobs/w0/in`, `jobs/w0/a/b` and
//! `jobs/w0`, but not `jobs/w01/in` nor `jobs/w1/in`. A worker with no pattern is granted
//! nothing.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A worker's grant.
#[derive(Clone, Debug)]
pub struct Grant {
    patterns: Vec<String>,
    set: GlobSet,
}

/// A pattern that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern {
    pub pattern: String,
    pub why: String,
}

impl fmt::Display for BadPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad service pattern {:?}: {}", self.pattern, self.why)
    }
}

impl std::error::Error for BadPattern {}

impl Grant {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Grant, BadPattern> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            let bad = |why: &str| BadPattern {
                pattern: p.to_string(),
                why: why.to_string(),
            };
            if p.is_empty() {
                return Err(bad("empty"));
            }
            // Character classes and alternatives are not part of the language: refused, so
            // that a pattern never grants more than it reads as.
            if p.contains(['[', ']', '{', '}', '\\']) {
                return Err(bad("only `*`, `?` and `**` are special"));
            }
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(false)
                .build()
                .map_err(|e| bad(&e.kind().to_string()))?;
            b.add(glob);
        }
        let set = b.build().map_err(|e| BadPattern {
            pattern: patterns
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join(","),
            why: e.to_string(),
        })?;
        Ok(Grant {
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
            set,
        })
    }

    /// Whether the service `name` is granted.
    pub fn admits(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.patterns.join(", "))
    }
}
