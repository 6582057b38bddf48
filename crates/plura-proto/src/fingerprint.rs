//! Certificate fingerprints as the agent pins them and `plura-server tls init` prints them:
//! `sha256:` and the SHA-256 of the certificate's DER in hex (colons between bytes, as openssl
//! prints them, and either case are accepted too).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a certificate in DER.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || {
            "must be sha256: and 64 hex digits (the SHA-256 of the certificate, e.g. from \
             'openssl x509 -noout -fingerprint -sha256')"
                .to_string()
        };
        let (scheme, hex) = text.split_once(':').ok_or_else(wrong)?;
        if !scheme.eq_ignore_ascii_case("sha256") {
            return Err(wrong());
        }
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(wrong());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| wrong())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| wrong())?;
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_and_parsed_alike_in_every_spelling() {
        let print = Fingerprint::of(b"certificate").to_string();
        assert!(
            print.starts_with("sha256:") && print.len() == 7 + 64,
            "{print}"
        );
        let openssl = format!(
            "SHA256:{}",
            print.as_bytes()[7..]
                .chunks(2)
                .map(|p| std::str::from_utf8(p).unwrap().to_uppercase())
                .collect::<Vec<_>>()
                .join(":")
        );
        for spelling in [print.clone(), openssl] {
            assert_eq!(spelling.parse(), Ok(Fingerprint::of(b"certificate")));
        }
        for wrong in ["", "sha256:", "md5:00", "sha256:zz", &print[..70]] {
            assert!(wrong.parse::<Fingerprint>().is_err(), "{wrong}");
        }
    }
}
