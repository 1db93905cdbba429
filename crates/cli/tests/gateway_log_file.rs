//! The security log in a file (`security_log_file`): a real `palisade
//! gateway` appends its records there (not to stdout), creates the file
//! readable by its user only, and after a rotation (the file moved away,
//! then SIGHUP, as logrotate does) writes to a new file at the same path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use gateway_common::{Gateway, get_id, log_test_config, wait_for};

fn config(log: &str) -> String {
    log_test_config(&format!("security_log_file = \"{log}\""), "")
}

async fn in_file(path: &std::path::Path, id: &str) {
    wait_for(
        &format!("{id} in {}", path.display()),
        Duration::from_secs(5),
        || async {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains(id)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_security_log_goes_to_its_file_and_follows_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policies.cedar"),
        "permit(principal, action, resource);\n",
    )
    .unwrap();
    let log = dir.path().join("security.jsonl");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, config("security.jsonl")).unwrap();
    let gw = Gateway::start(&cfg, "gw").await;

    let (status, first) = get_id(&gw, "/nothing/1").await;
    assert_eq!(status, 404);
    in_file(&log, &first).await;
    let line = std::fs::read_to_string(&log).unwrap();
    let rec: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(rec["request_id"], first.as_str());
    assert_eq!(rec["reason"], "not_found");
    // the file, not stdout; readable by the gateway's user only
    assert!(!gw.stdout().contains(&first), "{}", gw.stdout());
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // logrotate: move the file away, SIGHUP; the next record is in a new
    // file at the same path, and the moved one keeps what it had
    let rotated = dir.path().join("security.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("HUP");
    wait_for("reload after SIGHUP", Duration::from_secs(5), || async {
        gw.stderr().contains("configuration reloaded").then_some(())
    })
    .await;
    let (status, second) = get_id(&gw, "/nothing/2").await;
    assert_eq!(status, 404);
    in_file(&log, &second).await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains(&first) && !old.contains(&second), "{old}");
    assert!(!std::fs::read_to_string(&log).unwrap().contains(&first));

    // a file in a directory that does not exist is a configuration error
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, config("missing/security.jsonl")).unwrap();
    let (code, _, err) = Gateway::cli(&bad, &["bans", "list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("security_log_file: ")
            && err.contains("missing/security.jsonl is not a file in an existing directory"),
        "{err}"
    );
}
