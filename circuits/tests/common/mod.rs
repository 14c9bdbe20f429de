//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses some of the helpers

use std::path::PathBuf;
use std::process::Command;

/// `circuits/js`, after checking its npm dependencies are installed.
pub fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules/circomlibjs").is_dir() && dir.join("node_modules/snarkjs").is_dir(),
        "circomlibjs/snarkjs are not installed: run `npm ci --prefix circuits/js` (scripts/test does it)"
    );
    dir
}

/// Runs node with the given arguments in `circuits/js`; returns (success, stdout+stderr).
pub fn node(args: &[&str]) -> (bool, String) {
    let out = Command::new("node")
        .args(args)
        .current_dir(js_dir())
        .output()
        .expect("node is installed (Node.js 20)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medrollup-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
