//! Who the client really is behind a trusted proxy: the `X-Forwarded-For` hop that proxy vouches
//! for, or the source a TCP balancer states in the PROXY protocol header (v1 or v2) it sends
//! before anything else. Only peers in the trusted ranges are believed; nobody is by default.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest PROXY v1 line, `\r\n` included (the specification's bound).
const V1_MAX: usize = 107;
/// PROXY v2's signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Address and TLV bytes a v2 header may carry here; balancers send well under this.
const V2_MAX_BODY: usize = 4096;

/// The peers whose word on the client's address is taken.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self(ranges)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|range| range.contains(&ip))
    }

    /// The client of a request that `peer` sent with `headers`: the rightmost address of
    /// `X-Forwarded-For` that is not itself a trusted proxy, when `peer` is one; else `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // A hop that is not an address ends what can be believed: the last one vouched
            // for is the client.
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// An address as `X-Forwarded-For` carries it: bare, or with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 addresses as the IPv4 they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Reads a PROXY protocol header (v1 or v2) from the start of `stream`; answers the client it
/// states, or `None` for a header that states none (`UNKNOWN`, `LOCAL`: the balancer's own
/// health checks). Reads exactly the header, nothing of what follows it.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, String> {
    let mut start = [0u8; 5];
    read(stream, &mut start).await?;
    if &start == b"PROXY" {
        let mut line = start.to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err("a PROXY v1 line longer than 107 bytes".into());
            }
            let mut byte = [0u8; 1];
            read(stream, &mut byte).await?;
            line.push(byte[0]);
        }
        return parse_v1(&line[..line.len() - 2]);
    }
    if start != V2_SIGNATURE[..5] {
        return Err(
            "no PROXY protocol header (is --proxy-protocol meant for this balancer?)".into(),
        );
    }
    let mut rest = [0u8; 11];
    read(stream, &mut rest).await?;
    if rest[..7] != V2_SIGNATURE[5..] {
        return Err("a broken PROXY v2 signature".into());
    }
    let (version_command, family) = (rest[7], rest[8]);
    let length = usize::from(u16::from_be_bytes([rest[9], rest[10]]));
    if version_command >> 4 != 2 || length > V2_MAX_BODY {
        return Err("an unsupported PROXY v2 header".into());
    }
    let mut body = vec![0u8; length];
    read(stream, &mut body).await?;
    if version_command & 0x0f == 0 {
        return Ok(None);
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match family >> 4 {
        1 if length >= 12 => {
            let ip: [u8; 4] = body[..4].try_into().expect("four bytes");
            Ok(Some(SocketAddr::new(IpAddr::from(ip), port(8))))
        }
        2 if length >= 36 => {
            let ip: [u8; 16] = body[..16].try_into().expect("sixteen bytes");
            Ok(Some(SocketAddr::new(canonical(IpAddr::from(ip)), port(32))))
        }
        _ => Ok(None),
    }
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> Result<(), String> {
    stream
        .read_exact(buf)
        .await
        .map(drop)
        .map_err(|e| format!("the PROXY protocol header ended early: {e}"))
}

/// `PROXY TCP4 src dst sport dport` (the `\r\n` already gone).
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, String> {
    let line = std::str::from_utf8(line).map_err(|_| "a PROXY v1 line that is not text")?;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", "TCP4" | "TCP6", source, _, port, _] => {
            let ip = source.parse::<IpAddr>().map_err(|_| "a PROXY v1 source")?;
            let port = port.parse::<u16>().map_err(|_| "a PROXY v1 port")?;
            Ok(Some(SocketAddr::new(canonical(ip), port)))
        }
        _ => Err(format!("a malformed PROXY v1 line: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        // The client put a fake first hop; the proxies appended the real one.
        let headers = forwarded(&["6.6.6.6, 203.0.113.7", "10.1.2.3"]);
        assert_eq!(proxies.client(peer, &headers), ip("203.0.113.7"));
        assert_eq!(
            proxies.client(peer, &forwarded(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(proxies.client(peer, &HeaderMap::new()), peer, "no header");
        assert_eq!(
            proxies.client(peer, &forwarded(&["junk, 10.9.9.9"])),
            ip("10.9.9.9"),
            "a hop that is no address ends the walk"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded(&["198.51.100.1"]);
        assert_eq!(proxies.client(ip("192.0.2.9"), &headers), ip("192.0.2.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &headers),
            ip("127.0.0.1"),
            "nobody is trusted by default"
        );
        assert!(proxies.trusts(ip("::ffff:10.0.0.1")), "IPv4-mapped");
    }

    async fn header(bytes: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let mut reader = bytes;
        let found = read_proxy_header(&mut reader).await;
        (found, reader.to_vec())
    }

    #[tokio::test]
    async fn v1_and_v2_headers_state_the_client_and_nothing_more_is_read() {
        let (found, rest) = header(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET /").await;
        assert_eq!(found, Ok(Some("203.0.113.7:51000".parse().unwrap())));
        assert_eq!(rest, b"GET /");
        let (found, _) = header(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(found, Ok(None));

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([
            0x21, 0x11, 0x00, 0x0c, 203, 0, 113, 7, 10, 0, 0, 1, 0xc7, 0x38, 0x01, 0xbb,
        ]);
        v2.extend(b"\x16\x03\x01");
        let (found, rest) = header(&v2).await;
        assert_eq!(found, Ok(Some("203.0.113.7:51000".parse().unwrap())));
        assert_eq!(rest, b"\x16\x03\x01");

        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0x00, 0x00]);
        assert_eq!(header(&local).await.0, Ok(None));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 1.2.3.4",
            &[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(30),
        ] {
            assert!(
                header(bad).await.0.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
