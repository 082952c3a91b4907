//! The store's database connections as the operating system sees them.

use std::net::SocketAddr;
use std::str::FromStr;

use cortex_store::DatabaseConfig;
use cortex_testkit::TestStore;
use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
use sqlx::postgres::PgConnectOptions;

/// Every PostgreSQL connection of this process has Nagle's algorithm off (`TCP_NODELAY`). Without it a
/// statement written in two segments waits for the server's delayed ACK, ~40 ms on Linux (sqlx 0.9.0
/// opened its sockets so; docs/PERFORMANCE.md section 19). Each socket is read through a duplicate of its
/// descriptor (`pidfd_getfd` on this process), so no unsafe code is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_send_without_delay() {
    let Some(t) = TestStore::postgres_unless_skipped().await else { return };
    t.store.schema_version().await.unwrap();
    let DatabaseConfig::Postgres { url, .. } = &t.config else { unreachable!("a PostgreSQL store") };
    let port = PgConnectOptions::from_str(url).unwrap().get_port();
    let this_process = pidfd_open(getpid(), PidfdFlags::empty()).unwrap();
    let mut connections = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let is_socket =
            std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        // The entry's name is the descriptor's number.
        let Some(number) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        if !is_socket {
            continue;
        }
        // A descriptor closed since the directory was read is simply gone.
        let Ok(socket) = pidfd_getfd(&this_process, number, PidfdGetfdFlags::empty()) else { continue };
        let peer = rustix::net::getpeername(&socket).ok().flatten().and_then(|addr| SocketAddr::try_from(addr).ok());
        if peer.is_some_and(|peer| peer.port() == port && peer.ip().is_loopback()) {
            connections += 1;
            assert!(
                rustix::net::sockopt::tcp_nodelay(&socket).unwrap(),
                "a connection to PostgreSQL without TCP_NODELAY"
            );
        }
    }
    assert!(connections > 0, "found no connection to PostgreSQL on port {port}");
}
