//! The half of a TCP relay that runs inside a test-cluster node's network namespace.
//!
//! `nsenter --net=/run/netns/hearth-cl-nodeN netns_relay SOCKET HOST:PORT` listens on the unix
//! socket `SOCKET` (a path: reachable from every network namespace) and connects each client
//! to `HOST:PORT` as seen from inside the namespace (a node address, 192.168.213.N, exists
//! only there). The test process holds the other half: a TCP listener on 127.0.0.1 that
//! connects each client to `SOCKET` ([`hearth_tests::ha::Relay`]). So a test reaches the
//! replicas of the HA stack without any interface or route in the machine's own namespace.
//! Exits when its standard input closes (the test dropped the relay or died).

use std::path::PathBuf;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixListener};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(target)) = (args.next(), args.next()) else {
        eprintln!("usage: netns_relay SOCKET HOST:PORT");
        std::process::exit(2);
    };
    let socket = PathBuf::from(socket);
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netns_relay: cannot listen on {}: {e}", socket.display());
            std::process::exit(1);
        }
    };
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let serve = async {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                // A refused or timed-out connection closes the client's stream: to the
                // test, the replica does not answer.
                let connect = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    TcpStream::connect(&target),
                );
                if let Ok(Ok(mut upstream)) = connect.await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    };
    tokio::select! {
        () = stdin_closed => {}
        () = serve => {}
    }
    let _ = std::fs::remove_file(&socket);
}
