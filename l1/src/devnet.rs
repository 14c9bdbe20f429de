//! A local Ethereum dev chain: anvil (Foundry 1.7, from npm: `scripts/contracts`
//! installs it into `contracts/node_modules`) as a child process, for the
//! tests and the local farm.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// anvil's first default account: a public development key, funded on every
/// anvil chain. Never use it anywhere else.
pub const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// anvil's second default account, the dev chain's rollup owner (the
/// contract refuses the sequencer as owner). Public like [`DEV_KEY`].
pub const DEV_OWNER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// The address of [`DEV_OWNER_KEY`].
pub const DEV_OWNER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// Where anvil is: `$MEDROLLUP_ANVIL`, else the repository's npm install.
pub fn anvil_bin() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("MEDROLLUP_ANVIL") {
        return Ok(p.into());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contracts/node_modules/.bin/anvil");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} is missing: run scripts/contracts (it installs anvil from npm)", p.display()))
    }
}

/// A running anvil, killed on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
}

impl Anvil {
    /// Starts anvil on 127.0.0.1:`port` with extra `args` and waits for its port.
    pub fn start(port: u16, args: &[&str]) -> Result<Self, String> {
        let bin = anvil_bin()?;
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut a = Self { child, port };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = a.child.try_wait() {
                return Err(format!("anvil exited at start ({status})"));
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err(format!("anvil did not open port {port} within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(a)
    }

    /// Its JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops anvil with SIGINT, as Ctrl-C does, so that it writes
    /// `--dump-state`, and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
