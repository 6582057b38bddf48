//! `plura-server tls init`: a private CA and a server certificate it signs, for a quick start
//! without a public certificate. Agents trust the CA through `ca_file=` or pin its fingerprint.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use plura_proto::Fingerprint;

/// How long the CA is valid: it goes into every agent's configuration, so it should outlive
/// several server certificates.
const CA_DAYS: i64 = 3650;
/// How long a server certificate is valid before `tls init` must be run again (or a real one
/// put in its place).
const SERVER_DAYS: i64 = 825;

/// The files `init` writes, under its output folder.
pub struct QuickStart {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's fingerprint, as `server_fingerprint=` takes it.
    pub ca_fingerprint: Fingerprint,
}

/// Writes `ca.pem`, `ca-key.pem`, `server.pem` (the server's certificate, then the CA's, so a
/// client that pins the CA finds it in the handshake) and `server-key.pem` under `out`, keys
/// readable by the owner alone. Existing files are never overwritten.
pub fn init(hostnames: &[String], out: &Path) -> anyhow::Result<QuickStart> {
    anyhow::ensure!(
        !hostnames.is_empty(),
        "give the names agents reach the server by: --hostname plura.example.com"
    );
    let [ca_cert, ca_key_file, cert, key_file] =
        ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"].map(|name| out.join(name));
    for path in [&ca_cert, &ca_key_file, &cert, &key_file] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists; tls init never overwrites a certificate or key (move it away first)",
            path.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    // A name of its own: a client that trusts another install's CA must not take this one's
    // chain for that CA's.
    let tag: u32 = rand::random();
    ca.distinguished_name = name(&format!("PLURA Fleet private CA {tag:08x}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::minutes(5);
    ca.not_after = now + time::Duration::days(CA_DAYS);
    let ca = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::default();
    server.distinguished_name = name(&hostnames[0]);
    server.subject_alt_names = hostnames
        .iter()
        .map(|host| match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(host.clone().try_into().with_context(
                || format!("--hostname {host:?} is not a DNS name or an IP address"),
            )?)),
        })
        .collect::<anyhow::Result<_>>()?;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - time::Duration::minutes(5);
    server.not_after = now + time::Duration::days(SERVER_DAYS);
    let server = server.signed_by(&key, &ca, &ca_key)?;

    write(&ca_cert, &ca.pem(), 0o644)?;
    write(&ca_key_file, &ca_key.serialize_pem(), 0o600)?;
    write(&cert, &format!("{}{}", server.pem(), ca.pem()), 0o644)?;
    write(&key_file, &key.serialize_pem(), 0o600)?;
    Ok(QuickStart {
        ca_cert,
        ca_key: ca_key_file,
        cert,
        key: key_file,
        ca_fingerprint: Fingerprint::of(ca.der()),
    })
}

fn name(common: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common);
    name
}

/// Creates `path` with `mode` from the start, so a key is never readable by others even for a
/// moment.
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
