//! The `medrollup-client keys` commands: create, show, export, import and
//! re-password a keystore, with clear errors for a wrong password, a
//! damaged file and an overwrite (which never happens).

use std::path::Path;
use std::process::{Command, Output};

fn cli(dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_medrollup-client"));
    c.current_dir(dir).env_remove("MEDROLLUP_PASSWORD").env_remove("MEDROLLUP_NEW_PASSWORD");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "should fail: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn keystores_are_created_exported_imported_and_repassworded_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pw = [("MEDROLLUP_PASSWORD", "correct horse")];
    assert!(err(&cli(d, &[], &["keys", "new"])).contains("set MEDROLLUP_PASSWORD"));
    ok(&cli(d, &pw, &["keys", "new"]));
    let original = std::fs::read(d.join("medrollup-keystore.json")).unwrap();
    // Never overwritten.
    assert!(err(&cli(d, &pw, &["keys", "new"])).contains("exists"));
    assert_eq!(std::fs::read(d.join("medrollup-keystore.json")).unwrap(), original);
    // The public part needs no password and is what a hospital registers.
    let public: serde_json::Value = serde_json::from_str(&ok(&cli(d, &[], &["keys", "public"]))).unwrap();
    assert!(public["rsa_spki"].as_str().unwrap().len() > 700, "{public}");

    // Export under a new password; the copy opens with it only.
    let wrong = [("MEDROLLUP_PASSWORD", "wrong")];
    assert!(err(&cli(d, &wrong, &["keys", "export", "--out", "copy.json"])).contains("wrong password"));
    assert!(!d.join("copy.json").exists());
    let renew = [("MEDROLLUP_PASSWORD", "correct horse"), ("MEDROLLUP_NEW_PASSWORD", "battery staple")];
    ok(&cli(d, &renew, &["keys", "export", "--out", "copy.json"]));
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    assert!(err(&cli(&other, &pw, &["keys", "import", "--from", "../copy.json"])).contains("wrong password"));
    ok(&cli(
        &other,
        &[("MEDROLLUP_PASSWORD", "battery staple")],
        &["keys", "import", "--from", "../copy.json"],
    ));
    let imported: serde_json::Value =
        serde_json::from_str(&ok(&cli(&other, &[], &["keys", "public"]))).unwrap();
    assert_eq!(imported, public, "the same keys");

    // A new password for the keystore itself.
    ok(&cli(d, &renew, &["keys", "passwd"]));
    assert!(err(&cli(d, &pw, &["keys", "export", "--out", "x.json"])).contains("wrong password"));
    ok(&cli(d, &[("MEDROLLUP_PASSWORD", "battery staple")], &["keys", "export", "--out", "x.json"]));

    // A damaged keystore: a clear error, the file left as it was.
    let path = d.join("medrollup-keystore.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let ct = v["ciphertext"].as_str().unwrap().to_string();
    let first = if ct.starts_with('0') { '1' } else { '0' };
    let flipped = format!("{first}{}", &ct[1..]);
    v["ciphertext"] = flipped.into();
    let damaged = serde_json::to_vec(&v).unwrap();
    std::fs::write(&path, &damaged).unwrap();
    let e = err(&cli(d, &[("MEDROLLUP_PASSWORD", "battery staple")], &["keys", "export", "--out", "y.json"]));
    assert!(e.contains("corrupted"), "{e}");
    std::fs::write(&path, b"{ not json").unwrap();
    let e = err(&cli(d, &pw, &["keys", "public"]));
    assert!(e.contains("keystore") || e.contains("JSON"), "{e}");
}

#[test]
fn the_portal_listens_on_this_machine_only() {
    let dir = tempfile::tempdir().unwrap();
    let o = cli(dir.path(), &[], &["portal", "--account", "10", "--listen", "0.0.0.0:8088"]);
    let e = err(&o);
    assert!(e.contains("--listen 0.0.0.0:8088") && e.contains("listens on this machine only"), "{e}");
}

#[test]
fn a_grant_for_no_days_or_too_many_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    for days in ["0", "3651", "99999999999999999"] {
        let o = cli(dir.path(), &[], &["grant", "--grantee", "20", "--days", days]);
        let e = err(&o);
        assert!(e.contains("--days") && e.contains(days), "{days}: {e}");
    }
}
