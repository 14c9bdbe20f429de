//! A client of an IPFS node's RPC API (`/api/v0`, as Kubo and js-ipfs serve
//! it), as a [`ContentStore`].
//!
//! Content goes in with `add?cid-version=1&raw-leaves=true`, so that the
//! node's CID is the one [`crate::unixfs::import`] computes; the client checks
//! that it is, and that `cat` returns bytes with the CID asked for (a node, or
//! anything between, cannot hand back other content). Answers are parsed
//! leniently where nodes differ: `Size` is a string in Kubo and a number in
//! js-ipfs, and CIDs come in base32 or base58btc.

use crate::cid::Cid;
use crate::content::{ContentError, ContentStore, MAX_CONTENT};
use futures::future::BoxFuture;
use std::time::Duration;

/// An IPFS node's RPC API.
#[derive(Debug, Clone)]
pub struct KuboStore {
    base: String,
    http: reqwest::Client,
    /// How long the node may look for content it does not hold (its
    /// `timeout` option): past it, the content counts as not found.
    fetch_timeout: Duration,
}

impl KuboStore {
    /// A client of the node at `api` (e.g. `http://127.0.0.1:5001`).
    pub fn new(api: &str) -> Self {
        // Each call has its own timeout (`call`): an upload's grows with its size.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Self { base: api.trim_end_matches('/').to_string(), http, fetch_timeout: Duration::from_secs(5) }
    }

    /// Sets how long the node may look for content it does not hold.
    pub fn with_fetch_timeout(mut self, t: Duration) -> Self {
        self.fetch_timeout = t;
        self
    }

    fn timeout_arg(&self) -> String {
        format!("timeout={}ms", self.fetch_timeout.as_millis().max(1))
    }

    /// Posts to the node's RPC API; `upload` is the size of the content
    /// sent, if any. A call (its answer read in full) may take a minute,
    /// plus a second per 256 KiB sent, plus four minutes for a `cat` (up to
    /// [`MAX_CONTENT`] back): a slow link fails as a timeout, said as such.
    async fn call(
        &self,
        path: &str,
        form: Option<(reqwest::multipart::Form, usize)>,
    ) -> Result<reqwest::Response, ContentError> {
        let url = format!("{}/api/v0/{path}", self.base);
        let mut limit = Duration::from_secs(60);
        if path.starts_with("cat?") {
            limit += Duration::from_secs(240);
        }
        let req = match form {
            Some((f, upload)) => {
                limit += Duration::from_secs((upload / (256 * 1024)) as u64);
                self.http.post(&url).multipart(f)
            }
            None => self.http.post(&url),
        };
        let r = req.timeout(limit).send().await.map_err(|e| {
            ContentError::Remote(format!("the IPFS node at {} {}", self.base, describe(&e, limit)))
        })?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = read_within(r, MAX_ANSWER, path).await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        // Kubo's errors: {"Message": "...", "Code": 0, "Type": "error"}.
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["Message"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(ContentError::Remote(format!("{path}: {status}: {message}")))
    }

    fn not_found(message: &str) -> bool {
        let m = message.to_ascii_lowercase();
        // Kubo and js-ipfs say it in several ways; a fetch that timed out
        // means the content is not to be had either.
        ["not found", "not in the store", "no link named", "not pinned", "timed out", "deadline exceeded"]
            .iter()
            .any(|p| m.contains(p))
    }

    async fn add_bytes(&self, bytes: Vec<u8>) -> Result<Cid, ContentError> {
        if bytes.len() > MAX_CONTENT {
            return Err(ContentError::TooLarge(bytes.len()));
        }
        let expected = crate::unixfs::import(&bytes).root();
        let size = bytes.len();
        // js-ipfs needs an explicit Content-Type on the part.
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name("content")
            .mime_str("application/octet-stream")
            .expect("a valid MIME type");
        let form = reqwest::multipart::Form::new().part("file", part);
        let r = self.call("add?cid-version=1&raw-leaves=true&pin=true", Some((form, size))).await?;
        let text = String::from_utf8_lossy(&read_within(r, MAX_ANSWER, "add").await?).into_owned();
        // One JSON object per line (progress lines carry no Hash).
        let hash = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["Hash"].as_str().map(str::to_string))
            .ok_or_else(|| ContentError::Remote(format!("add: no Hash in the answer {text:?}")))?;
        let got: Cid = hash.parse().map_err(|e| ContentError::Remote(format!("add: CID {hash:?}: {e}")))?;
        if got != expected {
            return Err(ContentError::Remote(format!(
                "add: the node says {got}, the content's CID is {expected} (is it adding with other settings?)"
            )));
        }
        Ok(got)
    }

    async fn cat_bytes(&self, cid: Cid) -> Result<Vec<u8>, ContentError> {
        let r = match self.call(&format!("cat?arg={cid}&{}", self.timeout_arg()), None).await {
            Err(ContentError::Remote(m)) if Self::not_found(&m) => return Err(ContentError::NotFound(cid)),
            other => other?,
        };
        let bytes = read_within(r, MAX_CONTENT, &format!("cat {cid}")).await?;
        if crate::unixfs::import(&bytes).root() != cid {
            return Err(ContentError::Remote(format!("cat {cid}: the node returned other content")));
        }
        Ok(bytes)
    }

    /// Whether the node has the block or finds it within the fetch timeout.
    async fn has_block(&self, cid: Cid) -> Result<bool, ContentError> {
        match self.call(&format!("block/stat?arg={cid}&{}", self.timeout_arg()), None).await {
            Ok(_) => Ok(true),
            Err(ContentError::Remote(m)) if Self::not_found(&m) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Largest answer taken from the node other than content (`add`'s lines,
/// an error's message).
const MAX_ANSWER: usize = 1 << 20;

/// What went wrong with a request, for a person: whether it could not
/// connect or timed out, then each cause (reqwest's own message does not
/// name them).
fn describe(e: &reqwest::Error, limit: Duration) -> String {
    let what = if e.is_connect() {
        "does not answer (cannot connect)".to_string()
    } else if e.is_timeout() {
        format!("did not finish the call within {} s", limit.as_secs())
    } else {
        "does not answer".to_string()
    };
    let mut text = format!("{what}: {e}");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// An answer's body, refused past `limit` bytes: a node (or anything
/// between) could stream without end, and content is bounded anyway.
async fn read_within(mut r: reqwest::Response, limit: usize, what: &str) -> Result<Vec<u8>, ContentError> {
    let too_much = |n: String| {
        ContentError::Remote(format!("{what}: the node sends {n} bytes; at most {limit} are taken"))
    };
    if let Some(n) = r.content_length().filter(|&n| n > limit as u64) {
        return Err(too_much(n.to_string()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) =
        r.chunk().await.map_err(|e| ContentError::Remote(format!("{what}: reading the answer: {e}")))?
    {
        if bytes.len() + chunk.len() > limit {
            return Err(too_much(format!("more than {}", bytes.len() + chunk.len())));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

impl ContentStore for KuboStore {
    fn add(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<Cid, ContentError>> {
        Box::pin(self.add_bytes(bytes))
    }

    fn cat(&self, cid: Cid) -> BoxFuture<'_, Result<Vec<u8>, ContentError>> {
        Box::pin(self.cat_bytes(cid))
    }

    fn has(&self, cid: Cid) -> BoxFuture<'_, Result<bool, ContentError>> {
        Box::pin(self.has_block(cid))
    }

    fn pin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>> {
        Box::pin(async move {
            if !self.has_block(cid).await? {
                return Err(ContentError::NotFound(cid));
            }
            self.call(&format!("pin/add?arg={cid}&{}", self.timeout_arg()), None).await.map(|_| ())
        })
    }

    fn unpin(&self, cid: Cid) -> BoxFuture<'_, Result<(), ContentError>> {
        Box::pin(async move {
            match self.call(&format!("pin/rm?arg={cid}"), None).await {
                Ok(_) => Ok(()),
                Err(ContentError::Remote(m)) if Self::not_found(&m) => Err(ContentError::NotFound(cid)),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A node that answers every request 200 with `total` bytes, streamed
    /// in chunks with no length given.
    async fn node_sending(total: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut req = [0u8; 4096];
                    let _ = sock.read(&mut req).await;
                    let head =
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 1 << 20];
                    let mut sent = 0;
                    while sent < total {
                        let n = chunk.len().min(total - sent);
                        let frame = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
                        if sock.write_all(&frame).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                    let _ = sock.write_all(b"0\r\n\r\n").await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_node_that_sends_more_than_content_can_hold_is_cut_off() {
        let cid = crate::unixfs::import(b"a record").root();
        let store = KuboStore::new(&node_sending(MAX_CONTENT + (4 << 20)).await);
        let e = store.cat(cid).await.unwrap_err().to_string();
        assert!(e.contains(&format!("cat {cid}: the node sends more than")), "{e}");
        assert!(e.contains(&format!("at most {MAX_CONTENT} are taken")), "{e}");
        // Within the bound the bytes are read, and checked against the CID.
        let store = KuboStore::new(&node_sending(3 << 20).await);
        let e = store.cat(cid).await.unwrap_err().to_string();
        assert!(e.contains("the node returned other content"), "{e}");
        // add's answer is bounded tighter.
        let e = store.add(b"a record".to_vec()).await.unwrap_err().to_string();
        assert!(e.contains("add: the node sends more than") && e.contains(&MAX_ANSWER.to_string()), "{e}");
    }
}
