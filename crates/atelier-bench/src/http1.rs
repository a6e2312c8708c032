//! A minimal HTTP/1.1 keep-alive client for the load loops: the request is
//! bytes prepared once, the answer is read by its `Content-Length` (or chunks).
//! A general client spends more CPU per request than atelier does; on a
//! machine the load shares, that would be measured as atelier's latency.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A prepared POST with a JSON body.
#[derive(Clone)]
pub struct Prepared {
    addr: String,
    bytes: Arc<Vec<u8>>,
}

impl Prepared {
    /// `url` is `http://host:port/path`.
    pub fn post_json(url: &str, bearer: &str, body: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
        let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Ok(Prepared {
            addr: addr.to_owned(),
            bytes: Arc::new(request.into_bytes()),
        })
    }
}

/// One keep-alive connection and its read buffer.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(prepared: &Prepared) -> Result<Self, String> {
        let stream = TcpStream::connect(&prepared.addr)
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends the request and reads the whole answer; an error for a status other
    /// than 200.
    pub async fn send(&mut self, prepared: &Prepared) -> Result<(), String> {
        self.buf.clear();
        self.stream
            .write_all(&prepared.bytes)
            .await
            .map_err(|e| e.to_string())?;
        let (status, header_len, framing) = loop {
            self.fill().await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf).map_err(|e| e.to_string())? {
                httparse::Status::Partial => continue,
                httparse::Status::Complete(len) => {
                    let mut framing = Framing::UntilClose;
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok());
                            framing = Framing::Length(n.ok_or("bad Content-Length")?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            framing = Framing::Chunked;
                        }
                    }
                    break (response.code.unwrap_or(0), len, framing);
                }
            }
        };
        match framing {
            Framing::Length(n) => {
                while self.buf.len() < header_len + n {
                    self.fill().await?;
                }
            }
            Framing::Chunked => {
                // The last chunk is `0\r\n\r\n`.
                while !self.buf[header_len..].ends_with(b"0\r\n\r\n") {
                    self.fill().await?;
                }
            }
            Framing::UntilClose => return Err("an answer without a length".into()),
        }
        if status != 200 {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&self.buf[header_len..])
            ));
        }
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Keep-alive connections to one target, shared by the tasks of a load loop: a
/// request takes an idle one or opens another.
pub struct ConnPool {
    prepared: Prepared,
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl ConnPool {
    pub fn new(prepared: Prepared) -> Self {
        ConnPool {
            prepared,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub async fn send(&self) -> Result<(), String> {
        let idle = self.idle.lock().map_err(|_| "pool poisoned")?.pop();
        let conn = match idle {
            Some(mut conn) => match conn.send(&self.prepared).await {
                Ok(()) => conn,
                // atelier closes a keep-alive connection left idle for its
                // `header_timeout`: one that fails before any byte of an answer
                // is retried once on a new connection, as HTTP clients do.
                Err(_) if conn.buf.is_empty() => self.fresh().await?,
                Err(e) => return Err(e),
            },
            None => self.fresh().await?,
        };
        // A failed connection is dropped, not returned.
        self.idle.lock().map_err(|_| "pool poisoned")?.push(conn);
        Ok(())
    }

    async fn fresh(&self) -> Result<Conn, String> {
        let mut conn = Conn::open(&self.prepared).await?;
        conn.send(&self.prepared).await?;
        Ok(conn)
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}
