//! Whom the agent trusts to be its server: certificates that chain to the system's trust store or
//! to `ca_file` (a private CA), and, with `server_fingerprint`, only the certificate or CA that
//! fingerprint names.
//!
//! A pin of the server's own certificate trusts exactly that certificate (as SSH trusts a host
//! key; its names and dates are not checked, since the pin says more than they do). A pin of a
//! CA trusts the chains that verify, name and dates included, to that CA alone; the CA may come
//! from `ca_file` or from the chain the server sends (`plura-server tls init` sends it).

use std::sync::Arc;

use anyhow::Context;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use plura_proto::Fingerprint;
use plura_proto::config::AgentConfig;

/// Whom to trust: `ca_file` (a private CA's certificates, PEM) besides the system's store, and
/// with a pin only the certificate or CA of that fingerprint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust<'a> {
    pub ca_file: Option<&'a str>,
    pub server_fingerprint: Option<Fingerprint>,
}

impl<'a> From<&'a AgentConfig> for Trust<'a> {
    fn from(config: &'a AgentConfig) -> Self {
        Self {
            ca_file: config.ca_file.as_deref(),
            server_fingerprint: config.server_fingerprint,
        }
    }
}

/// The TLS settings for talking to a server trusted as `trust` says. Reads `ca_file`; contacts
/// nobody.
pub fn client_config(trust: Trust<'_>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let private = match trust.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("ca_file {path}: cannot read its certificates"))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "ca_file {path}: holds no PEM certificate"
            );
            certs
        }
        None => Vec::new(),
    };
    let mut roots = RootCertStore::empty();
    // The system's store may be missing or partly unreadable (a minimal image); ca_file and a
    // pin still work without it.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    for cert in &private {
        roots
            .add(cert.clone())
            .context("ca_file: a certificate that cannot be a trust anchor")?;
    }
    // webpki refuses an empty store; one that trusts nothing is what is meant then.
    let usual = if roots.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("the trusted certificates")?,
        )
    };
    let verifier = Verifier {
        usual,
        pin: trust.server_fingerprint,
        private,
        provider: provider.clone(),
    };
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

#[derive(Debug)]
struct Verifier {
    /// What the system's store and `ca_file` trust; `None` when they hold nothing.
    usual: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<Fingerprint>,
    /// `ca_file`'s certificates, where a pinned CA may be found.
    private: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return match &self.usual {
                Some(usual) => usual.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ),
                None => Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
            };
        };
        if Fingerprint::of(end_entity) == pin {
            return Ok(ServerCertVerified::assertion());
        }
        let pinned = intermediates
            .iter()
            .chain(&self.private)
            .find(|cert| Fingerprint::of(cert) == pin)
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(PinMismatch),
                )))
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(pinned.clone().into_owned())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "no certificate in the server's chain has the fingerprint server_fingerprint names",
        )
    }
}

impl std::error::Error for PinMismatch {}
