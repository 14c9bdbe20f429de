//! A local IPFS node for tests and benchmarks: js-ipfs 0.66.1 (installed
//! from npm into `storage/ipfs/` by `scripts/ipfs`; no Kubo binary is
//! installable here) with its own repository, offline, on free ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `jsipfs` is: `$MEDROLLUP_JSIPFS`, else the repository's npm install.
pub fn jsipfs() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("MEDROLLUP_JSIPFS") {
        return Ok(p.into());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ipfs/node_modules/.bin/jsipfs");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} is missing: run scripts/ipfs (it installs js-ipfs)", p.display()))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Whether a bodiless POST to `host`/`path` answers 200.
fn answers(host: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(host) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

/// A js-ipfs daemon, killed on drop (its repository goes with it).
#[derive(Debug)]
pub struct IpfsNode {
    child: Child,
    api: String,
    repo: PathBuf,
}

impl IpfsNode {
    /// Initialises a repository (`--profile test`), puts every address on a
    /// free loopback port, starts the daemon offline and waits until its API
    /// answers (its port opens a little before).
    pub fn start() -> Result<Self, String> {
        let bin = jsipfs()?;
        let repo =
            std::env::temp_dir().join(format!("medrollup-ipfs-{}-{}", std::process::id(), free_port()?));
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new(&bin)
                .args(args)
                .env("IPFS_PATH", &repo)
                .output()
                .map_err(|e| format!("running {}: {e}", bin.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("jsipfs {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
            }
        };
        run(&["init", "--profile", "test"])?;
        let (api, swarm, gateway, rpc) = (free_port()?, free_port()?, free_port()?, free_port()?);
        run(&["config", "Addresses.API", &format!("/ip4/127.0.0.1/tcp/{api}")])?;
        run(&["config", "Addresses.Gateway", &format!("/ip4/127.0.0.1/tcp/{gateway}")])?;
        run(&["config", "Addresses.RPC", &format!("/ip4/127.0.0.1/tcp/{rpc}")])?;
        run(&["config", "--json", "Addresses.Swarm", &format!("[\"/ip4/127.0.0.1/tcp/{swarm}\"]")])?;
        let log = std::fs::File::create(repo.join("daemon.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args(["daemon", "--offline"])
            .env("IPFS_PATH", &repo)
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting the daemon: {e}"))?;
        let mut node = Self { child, api: format!("http://127.0.0.1:{api}"), repo };
        let host = format!("127.0.0.1:{api}");
        let t = Instant::now();
        while !answers(&host, "/api/v0/id") {
            if let Ok(Some(s)) = node.child.try_wait() {
                return Err(format!("the jsipfs daemon exited ({s}): {}", node.log()));
            }
            if t.elapsed() > Duration::from_secs(90) {
                return Err(format!("the jsipfs daemon is not ready after 90 s: {}", node.log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(node)
    }

    /// Its RPC API URL.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// What the daemon printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.repo.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.repo);
    }
}
