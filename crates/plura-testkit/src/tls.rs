//! A private CA and a server certificate for tests and benchmarks that speak HTTPS, made as
//! `plura-server tls init` makes them, with clients that trust that CA alone.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use plura_server::tls::{Certified, TlsFiles, quick_start};

pub struct TestCa {
    pub files: TlsFiles,
    /// The CA's certificate (PEM), as an agent's `ca_file` names it.
    pub ca_file: std::path::PathBuf,
    ca_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// A CA and a certificate for `localhost` and `127.0.0.1`, in a folder of their own.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let hostnames = ["localhost".to_string(), "127.0.0.1".to_string()];
        let made = quick_start::init(&hostnames, dir.path()).expect("a CA and a certificate");
        Self {
            files: TlsFiles {
                cert: made.cert,
                key: made.key,
            },
            ca_pem: std::fs::read(&made.ca_cert).expect("the CA certificate"),
            ca_file: made.ca_cert,
            _dir: dir,
        }
    }

    /// What a server serves with.
    pub fn certified(&self) -> Arc<Certified> {
        Arc::new(Certified::load(self.files.clone()).expect("the certificate loads"))
    }

    /// rustls settings that trust this CA alone.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(&self.ca_pem).expect("the CA in PEM");
        roots.add(ca).expect("a trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A reqwest client that trusts this CA alone.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&self.ca_pem).expect("the CA in PEM"),
            )
            .build()
            .expect("a client")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
