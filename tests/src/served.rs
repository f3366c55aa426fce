//! What a deployed fixture app actually serves: each running container of a stack asked for
//! `/version` from the host through its `docker_gwbridge` address, as hearth's probe reaches
//! it. Shared by the warm-app and promotion tests, which check that the old version keeps
//! answering during an upgrade.

use std::collections::BTreeSet;
use std::time::Duration;

use controller::swarm::{ContainerState, LabelFilter, Swarm};

/// The versions the running containers of `stack` answer at `/version`.
///
/// # Panics
/// When the containers cannot be listed or `docker network inspect` cannot run.
pub async fn served_versions(swarm: &dyn Swarm, stack: &str) -> BTreeSet<String> {
    let filter = LabelFilter::eq("com.docker.stack.namespace", stack);
    let containers = swarm
        .list_containers(&filter)
        .await
        .expect("list containers");
    let out = std::process::Command::new("/usr/bin/docker")
        .args([
            "network",
            "inspect",
            "docker_gwbridge",
            "--format",
            "{{json .Containers}}",
        ])
        .output()
        .expect("docker network inspect");
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut versions = BTreeSet::new();
    for c in containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
    {
        let Some(ip) = map
            .get(&c.id)
            .and_then(|e| e.get("IPv4Address"))
            .and_then(|a| a.as_str())
            .and_then(|a| a.split('/').next())
        else {
            continue;
        };
        if let Some(v) = get_version(ip).await {
            versions.insert(v);
        }
    }
    versions
}

/// `GET /version` on port 8080 of `ip`: the body of a 200 answer, or `None` within 3 s.
pub async fn get_version(ip: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect((ip, 8080)).await.ok()?;
        s.write_all(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.contains(" 200 ").then(|| body.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .ok()
        .flatten()
}
