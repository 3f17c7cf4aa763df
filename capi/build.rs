//! Gives libsivshm.so its SONAME, libsivshm.so.0: 0 is the C ABI's major version
//! (SIVSHM_CAPI_VERSION_MAJOR in src/lib.rs); change both together.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsivshm.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
