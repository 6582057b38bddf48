//! A lean HTTP/1.1 client for the load generators: one keep-alive connection, one request at a
//! time, the request written whole and the answer read to its end. The server and its load share
//! the same two cores, so every microsecond the client spends is one the server cannot; a general
//! client (reqwest) took nearly as much CPU per request as the server (wrk is lean for the same
//! reason). Over TLS (`https://`), the same with rustls between.

use std::io::{self, Write};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

/// A plain or TLS stream.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The longest head of an answer read; the server's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// The longest body read; a login's answer is well under a kilobyte.
const MAX_BODY: usize = 1024 * 1024;

pub struct Connection {
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    stream: Option<BufReader<Box<dyn Io>>>,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    /// A connection to the server at `base` (`http://host:port`, or `https://host:port` with
    /// `tls`), opened on first use and again after the server closes it.
    pub fn new(base: &str, tls: Option<Arc<ClientConfig>>) -> Self {
        let address = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        let tls = tls.map(|config| {
            let host = address.rsplit_once(':').map_or(&*address, |(host, _)| host);
            let name = ServerName::try_from(host.to_owned()).expect("a server name or address");
            (TlsConnector::from(config), name)
        });
        Self {
            address,
            tls,
            stream: None,
            request: Vec::with_capacity(512),
            line: String::with_capacity(128),
            body: Vec::new(),
        }
    }

    /// Posts an empty body to `path` with a bearer token; answers the status code.
    pub async fn post_empty(&mut self, path: &str, bearer: &str) -> io::Result<u16> {
        self.post(path, bearer, None).await
    }

    /// Posts `json` (or nothing) to `path` with a bearer token; answers the status code, and
    /// leaves the answer's body in `body()`.
    pub async fn post(&mut self, path: &str, bearer: &str, json: Option<&[u8]>) -> io::Result<u16> {
        let body = json.unwrap_or_default();
        self.request.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(
            self.request,
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {bearer}\r\n{}\
             content-length: {}\r\n\r\n",
            self.address,
            if json.is_some() {
                "content-type: application/json\r\n"
            } else {
                ""
            },
            body.len(),
        );
        self.request.extend_from_slice(body);
        let result = self.exchange().await;
        if !matches!(result, Ok((_, true))) {
            // Closed by the server, or broken: the next request opens a new connection.
            self.stream = None;
        }
        result.map(|(status, _)| status)
    }

    /// The body of the last answer.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Sends the request and reads the answer; also says whether the connection stays open.
    async fn exchange(&mut self) -> io::Result<(u16, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address).await?;
            stream.set_nodelay(true)?;
            let stream: Box<dyn Io> = match &self.tls {
                Some((connector, name)) => Box::new(connector.connect(name.clone(), stream).await?),
                None => Box::new(stream),
            };
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.get_mut().write_all(&self.request).await?;

        let status = status_code(read_line(stream, &mut self.line).await?)?;
        let mut length = 0usize;
        let mut keep_alive = true;
        let mut head = 0usize;
        loop {
            let line = read_line(stream, &mut self.line).await?;
            head += line.len();
            if head > MAX_HEAD {
                return Err(bad("a head too long"));
            }
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad("a header without a colon"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| bad("a bad content-length"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("a chunked body (not expected here)"));
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        if length > MAX_BODY {
            return Err(bad("a body too long"));
        }
        self.body.resize(length, 0);
        stream.read_exact(&mut self.body).await?;
        Ok((status, keep_alive))
    }
}

/// Reads one line of the head, without its line end.
async fn read_line<'a>(
    stream: &mut BufReader<Box<dyn Io>>,
    line: &'a mut String,
) -> io::Result<&'a str> {
    line.clear();
    if stream.read_line(line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "answer cut short",
        ));
    }
    Ok(line.trim_end())
}

fn status_code(line: &str) -> io::Result<u16> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => {
            code.parse().map_err(|_| bad("a bad status code"))
        }
        _ => Err(bad("not an HTTP/1 status line")),
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what} in the answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;

    /// Against a real axum server: a 204, a 401 with a body, and again on the same connection.
    #[tokio::test]
    async fn posts_and_reads_answers_with_and_without_bodies() {
        let app = Router::new()
            .route("/ok", post(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/no",
                post(|| async { (StatusCode::UNAUTHORIZED, "{\"error\":\"no\"}") }),
            )
            .route("/echo", post(|body: String| async move { body }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut connection = Connection::new(&format!("http://{address}"), None);
        for _ in 0..3 {
            assert_eq!(connection.post_empty("/ok", "k").await.unwrap(), 204);
            assert_eq!(connection.post_empty("/no", "k").await.unwrap(), 401);
            assert_eq!(connection.body(), b"{\"error\":\"no\"}");
            let echoed = connection.post("/echo", "k", Some(b"[1]")).await.unwrap();
            assert_eq!((echoed, connection.body()), (200, &b"[1]"[..]));
        }
        assert_eq!(connection.post_empty("/missing", "k").await.unwrap(), 404);
    }
}
