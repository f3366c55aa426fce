//! Looking for secrets where they must not be: random values to plant, the strings that give a value away (raw, and in base64 at each byte alignment), raw HTTP requests with any `Authorization` header, and the search itself.

use std::net::SocketAddr;
use std::time::Duration;

use controller::swarm::spec::base64_encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `n` random bytes, hex.
pub fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The strings that give `value` away: itself, and the part of its base64 that does not depend
/// on what surrounds it, for each of the three byte offsets it can have in a longer text.
///
/// # Panics
/// When `value` is too short for its base64 core to be searched for (under ~24 bytes).
pub fn needles(what: &str, value: &str) -> Vec<(String, String)> {
    let mut out = vec![(what.to_string(), value.to_string())];
    let bytes = value.as_bytes();
    for offset in 0..3usize {
        let mut shifted = vec![b'#'; offset];
        shifted.extend_from_slice(bytes);
        let encoded = base64_encode(&shifted);
        // Groups of 3 bytes (4 characters) that lie wholly inside `value`.
        let first = offset.div_ceil(3);
        let last = (offset + bytes.len()) / 3;
        let core = encoded[first * 4..last * 4].to_string();
        assert!(core.len() >= 32, "{what} is too short to search for");
        out.push((format!("{what} in base64 at offset {offset}"), core));
    }
    out
}

/// Every (needle, text) hit: `"<what> in <source>: <line>"`, one per needle and source.
pub fn find_leaks(texts: &[(String, String)], needles: &[(String, String)]) -> Vec<String> {
    let mut leaks = Vec::new();
    for (source, text) in texts {
        for (what, needle) in needles {
            if let Some(line) = text.lines().find(|l| l.contains(needle.as_str())) {
                leaks.push(format!("{what} in {source}: {line}"));
            }
        }
    }
    leaks
}

/// Sends one raw HTTP/1.1 request (so the `Authorization` header can be anything, even
/// non-UTF-8); the status and the whole answer (head and body) as text.
///
/// # Panics
/// When the daemon does not answer within 20 s or the answer has no status.
pub async fn raw_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&[u8]>,
    body: &[u8],
) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the daemon");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        if let Some(value) = authorization {
            request.extend_from_slice(b"Authorization: ");
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("send the request");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .expect("read the answer");
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
        (status, text)
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the daemon answers within 20 s")
}

/// [`raw_exchange`]'s status only.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&[u8]>,
    body: &[u8],
) -> u16 {
    raw_exchange(addr, method, path, authorization, body)
        .await
        .0
}
