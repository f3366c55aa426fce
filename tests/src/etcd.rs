//! The 3-member etcd test cluster (scripts/etcd.sh) for tests of the etcd store and leader election.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::in_ci;

/// Client endpoints of the test cluster (`HEARTH_ETCD_ENDPOINTS`, else scripts/etcd.sh's).
pub fn endpoints() -> String {
    std::env::var("HEARTH_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793".to_string())
}

/// Brings the cluster up (`scripts/etcd.sh up`, idempotent) and returns a fresh
/// `etcd://…/hearth-test/<test>-<unique>` store URL.
///
/// # Panics
/// Under `CI=true` when the cluster cannot be brought up; outside CI it prints a loud SKIP
/// and returns `None`.
pub fn store_url(test: &str) -> Option<String> {
    if std::env::var("HEARTH_ETCD_ENDPOINTS").is_err() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/etcd.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg("up")
            .output();
        let why = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = why {
            assert!(
                !in_ci(),
                "CI=true and the etcd test cluster is unusable for {test}: {why}"
            );
            eprintln!("\n!!!!!! SKIP {test}: no etcd test cluster: {why}\n");
            return None;
        }
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Some(format!(
        "etcd://{}/hearth-test/{test}-{}-{nanos}",
        endpoints(),
        std::process::id()
    ))
}
