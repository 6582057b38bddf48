//! What the storage tests share: a store on a new SQLite file, and a login to give it.

use plura_proto::{LoginRequest, Timestamp};

use super::SqlStore;
use crate::store::Login;

/// A store on a new SQLite file, and the folder that holds it (the file goes with it).
pub async fn store_on_a_file() -> (tempfile::TempDir, SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plura.db").display());
    let store = crate::store::open(&url).await.unwrap();
    (dir, store)
}

/// A login of `ip` and `hostname` now, with a key hash of its own.
pub fn login(ip: &str, hostname: &str) -> Login {
    let now = Timestamp::now();
    Login {
        request: LoginRequest {
            ip: ip.into(),
            hostname: hostname.into(),
            machine_id: None,
            version: "1".into(),
            os: "Linux".into(),
            kind: "waf".into(),
            cloud: Default::default(),
        },
        source_ip: None,
        key_hash: format!("hash of {ip} {hostname}"),
        at: now,
        heard_since: now,
    }
}
