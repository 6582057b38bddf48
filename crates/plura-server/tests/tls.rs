//! HTTPS end to end with the real binaries: `tls init`'s CA and certificate, the real agent
//! trusting it by `ca_file` or by pin and refusing another CA, a certificate renewed on disk while
//! a connection stays open, and TLS 1.1 refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use plura_proto::{AgentList, AgentStatus, Fingerprint};
use plura_testkit::eventually;
use plura_testkit::process::Process;
use plura_testkit::served::{self, Served};

const BIN: &str = env!("CARGO_BIN_EXE_plura-server");
const WAIT: Duration = Duration::from_secs(20);

/// What `plura-server tls init` made in one folder.
struct Made {
    dir: PathBuf,
    /// The fingerprint it printed on its last line.
    printed: String,
}

impl Made {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
}

async fn tls_init(dir: &Path) -> Made {
    let printed = served::last_line(
        Command::new(BIN)
            .args(["tls", "init", "--hostname", "localhost"])
            .args(["--hostname", "127.0.0.1", "--out"])
            .arg(dir)
            // Run where a default SQLite database would be made, to see that none is.
            .current_dir(dir.parent().unwrap()),
    )
    .await;
    Made {
        dir: dir.to_path_buf(),
        printed,
    }
}

fn ca_der(made: &Made) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(made.ca()).unwrap().to_vec()
}

/// A client that trusts only `ca`.
fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn serve_tls(dir: &Path, cert: &Path, key: &Path) -> Served {
    let database = format!("sqlite://{}/tls.db", dir.display());
    let cert = cert.to_str().unwrap();
    let key = key.to_str().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
        "--heartbeat-interval",
        "1s",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    Served::start(BIN, &args).await
}

#[tokio::test]
async fn tls_init_makes_a_ca_and_a_certificate_the_server_serves_https_with() {
    let top = tempfile::tempdir().unwrap();
    let made = tls_init(&top.path().join("tls")).await;
    assert_eq!(made.printed, Fingerprint::of(&ca_der(&made)).to_string());
    assert!(
        !top.path().join("plura.db").exists(),
        "tls init touches no database"
    );
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca-key.pem", "server-key.pem"] {
        let mode = std::fs::metadata(made.dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = Command::new(BIN)
        .args(["tls", "init", "--hostname", "localhost", "--out"])
        .arg(&made.dir)
        .output()
        .await
        .unwrap();
    assert!(!again.status.success(), "never overwrites a key");
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));

    let server = serve_tls(top.path(), &made.cert(), &made.key()).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let healthz = client_trusting(&made.ca())
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let plain = reqwest::get(server.base.replace("https://", "http://") + "/healthz").await;
    assert!(plain.is_err(), "plain HTTP on the TLS port gets no answer");
}

/// Writes plura.conf for the real agent against `server`, with `extra` lines.
fn agent_config(dir: &Path, server: &Served, enrollment: &str, extra: &str) -> PathBuf {
    let path = dir.join("plura.conf");
    let text = format!(
        "server_url={}\nenrollment_token={enrollment}\ninterface=lo\n{extra}",
        server.base
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn agent(config: &Path) -> Process {
    let mut command = Command::new(served::beside(BIN, "plura-agent"));
    command
        .arg("--config")
        .arg(config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PLURA_LOG", "info");
    Process::spawn(command)
}

async fn running_agents(server: &Served, ca: &Path, admin: &str) -> usize {
    let list: AgentList = get_trusting(server, ca, "/api/v1/agents", admin).await;
    list.items
        .iter()
        .filter(|a| a.status == AgentStatus::Running)
        .count()
}

async fn get_trusting<T: serde::de::DeserializeOwned>(
    server: &Served,
    ca: &Path,
    path: &str,
    token: &str,
) -> T {
    let response = client_trusting(ca)
        .get(format!("{}{path}", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    plura_testkit::json_ok(response).await
}

#[tokio::test]
async fn the_agent_trusts_its_ca_file_or_pin_and_says_why_it_refuses_another() {
    let top = tempfile::tempdir().unwrap();
    let ours = tls_init(&top.path().join("ours")).await;
    let theirs = tls_init(&top.path().join("theirs")).await;
    let server = serve_tls(top.path(), &ours.cert(), &ours.key()).await;
    let admin = server.first_start_token().unwrap();
    let database = format!("sqlite://{}/tls.db", top.path().display());
    let enrollment = served::enrollment_token(BIN, &database).await;

    // Another CA: refused with the reason, retried, never logged in.
    let dir = tempfile::tempdir().unwrap();
    let wrong_ca = format!("ca_file={}\n", theirs.ca().display());
    let refused = agent(&agent_config(dir.path(), &server, &enrollment, &wrong_ca));
    refused.wait_for_log("cannot log in to https://").await;
    let line = refused
        .stderr()
        .into_iter()
        .find(|l| l.contains("cannot log in to"))
        .unwrap();
    assert!(
        line.contains(&server.base) && line.contains("UnknownIssuer"),
        "names the server and the reason: {line}"
    );
    drop(refused);

    // A pin that names no certificate of the server's: refused, saying so.
    let wrong_pin = format!("server_fingerprint={}\n", theirs.printed);
    let refused = agent(&agent_config(dir.path(), &server, &enrollment, &wrong_pin));
    refused
        .wait_for_log("no certificate in the server's chain has the fingerprint")
        .await;
    drop(refused);
    assert_eq!(running_agents(&server, &ours.ca(), &admin).await, 0);

    // The right CA file, then the CA's pin alone: each logs in.
    for trust in [
        format!("ca_file={}\n", ours.ca().display()),
        format!("server_fingerprint={}\n", ours.printed),
    ] {
        let mut trusting = agent(&agent_config(dir.path(), &server, &enrollment, &trust));
        trusting.wait_for_log("logged in to https://").await;
        eventually("the agent runs", WAIT, || async {
            (running_agents(&server, &ours.ca(), &admin).await == 1).then_some(())
        })
        .await;
        trusting.signal("-TERM").await;
    }
}

#[tokio::test]
async fn the_agents_check_refuses_plain_http_and_bad_hostnames_and_warns_of_a_readable_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plura.conf");
    let check = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        let output = std::process::Command::new(served::beside(BIN, "plura-agent"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), said)
    };
    let (code, said) = check(
        "server_url=http://plura.example.com\nenrollment_token=t\ninterface=lo\n",
        0o600,
    );
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("allow_plain_http=1"), "{said}");

    let (code, said) = check(
        "server_url=https://plura.example.com\nenrollment_token=t\ninterface=lo\n",
        0o644,
    );
    assert_eq!(code, Some(0), "a warning keeps the status: {said}");
    assert!(
        said.contains("warning: it is readable by other users"),
        "{said}"
    );

    let (code, said) = check(
        "server_url=https://plura.example.com\nenrollment_token=t\ninterface=lo\nca_file=/nonexistent.pem\n",
        0o600,
    );
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("ca_file /nonexistent.pem"), "{said}");

    // A host whose name the server would refuse (a Cyrillic letter), in a UTS namespace.
    std::fs::write(
        &path,
        "server_url=https://plura.example.com\nenrollment_token=t\ninterface=lo\n",
    )
    .unwrap();
    let output = std::process::Command::new("unshare")
        .args(["--uts", "sh", "-c"])
        .arg(r#"printf %s "$0" > /proc/sys/kernel/hostname && exec "$1" --config "$2" --check"#)
        .arg("w\u{0430}f-1")
        .arg(served::beside(BIN, "plura-agent"))
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("the server will refuse this host's name") && said.contains("ASCII"),
        "{said}"
    );
}

/// A new TLS connection to `addr`, whatever certificate it presents.
async fn handshake(addr: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth();
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), stream)
        .await
        .unwrap()
}

/// The certificate the server presents to a new handshake.
async fn presented(addr: &str) -> Fingerprint {
    let tls = handshake(addr).await;
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    Fingerprint::of(&chain[0])
}

fn leaf(made: &Made) -> Fingerprint {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_file_iter(made.cert())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    Fingerprint::of(&first)
}

/// Replaces `to` by renaming a copy of `from` over it, as certbot and cert-manager do.
fn rename_over(from: &Path, to: &Path) {
    let staged = to.with_extension("new");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_handshakes_while_an_open_connection_goes_on() {
    let top = tempfile::tempdir().unwrap();
    let old = tls_init(&top.path().join("old")).await;
    let new = tls_init(&top.path().join("new")).await;
    let live = top.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    std::fs::copy(old.cert(), &cert).unwrap();
    std::fs::copy(old.key(), &key).unwrap();
    let server = serve_tls(top.path(), &cert, &key).await;
    let addr = server.base.trim_start_matches("https://").to_string();
    assert_eq!(presented(&addr).await, leaf(&old));

    // A connection made now, kept alive across the renewal.
    let mut open = handshake(&addr).await;
    assert!(healthz_on(&mut open).await);

    // A broken pair (the new certificate with the old key) is refused and the old one kept.
    rename_over(&new.cert(), &cert);
    eventually("the server reports the mismatched pair", WAIT, || async {
        server
            .process
            .logged("new connections keep the previous certificate")
            .then_some(())
    })
    .await;
    assert_eq!(presented(&addr).await, leaf(&old));

    // The key follows: new handshakes get the new certificate.
    rename_over(&new.key(), &key);
    eventually("new handshakes get the new certificate", WAIT, || async {
        (presented(&addr).await == leaf(&new)).then_some(())
    })
    .await;
    assert!(healthz_on(&mut open).await, "the open connection goes on");
}

/// Sends `GET /healthz` on a kept-alive HTTP/1.1 connection; answers whether it got a 200.
async fn healthz_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
) -> bool {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer[..n].starts_with(b"HTTP/1.1 200")
}

/// What `openssl s_client` says of a handshake with `addr` at one protocol version.
async fn openssl_handshake(addr: &str, version: &str) -> String {
    let output = Command::new("openssl")
        // The lowest security level, so that the client itself would offer TLS 1.1.
        .args([
            "s_client",
            "-connect",
            addr,
            version,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl (Debian's openssl package)");
    String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
}

#[tokio::test]
async fn tls_1_1_is_refused_and_1_2_served() {
    let top = tempfile::tempdir().unwrap();
    let made = tls_init(&top.path().join("tls")).await;
    let server = serve_tls(top.path(), &made.cert(), &made.key()).await;
    let addr = server.base.trim_start_matches("https://");
    let old = openssl_handshake(addr, "-tls1_1").await;
    assert!(
        old.contains("alert handshake failure") && old.contains("Cipher is (NONE)"),
        "{old}"
    );
    let current = openssl_handshake(addr, "-tls1_2").await;
    assert!(
        current.contains("New, TLSv1.2, Cipher is ECDHE"),
        "{current}"
    );
}

/// Accepts any certificate: for reading which one the server presents, not for trusting it.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
