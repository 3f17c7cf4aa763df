//! The library side of `sivshmctl`: its command line definition ([`args`]), so that the
//! man page and shell completions generator (`tools/gen-docs`, package `sivshm-gen-docs`)
//! builds them from the same clap `Command` the binary parses with.

pub mod args;
