//! The farm's processes: nats-server, anvil, the coordinator, the workers and
//! Prometheus, each in its own process group (so a Ctrl-C reaches only the
//! demo, which then stops them in order), its output in a log file. Each is
//! sent SIGTERM by the kernel should the demo die without stopping it
//! (SIGKILL, the OOM killer, a second Ctrl-C), so none is left running.

use anyhow::{Context, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set when the demo is asked to stop: a start-up still waiting for a
/// service gives up.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The repository (where `.tools/`, `contracts/` and `dashboards/` are).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// A running process, stopped on drop.
#[derive(Debug)]
pub struct Service {
    /// Its name (and log file's).
    pub name: String,
    child: Child,
    /// Its log.
    pub log: PathBuf,
}

impl Service {
    /// Starts `cmd` with its output in `<logs>/<name>.log`.
    ///
    /// The kernel sends it SIGTERM when the thread that started it ends, so
    /// services are started from the main thread only (the demo's process
    /// ends with it).
    pub fn spawn(name: &str, cmd: &mut Command, logs: &Path) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let parent = std::process::id();
        // SAFETY: between fork and exec the closure calls only prctl and
        // getppid, both async-signal-safe, and allocates nothing.
        #[allow(unsafe_code)] // pre_exec is unsafe by definition
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo died before the line above took effect.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the demo exited while this service started"));
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone()?))
            .stderr(Stdio::from(f))
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self { name: name.into(), child, log })
    }

    /// The last lines it printed.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// An error if it has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); its log ({}) ends:\n{}", self.name, self.log.display(), self.tail());
        }
        Ok(())
    }

    /// Waits until it listens on `port`.
    pub fn wait_port(&mut self, port: u16, within: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.check()?;
            if STOP.load(Ordering::SeqCst) {
                bail!("stopped while {} was starting", self.name);
            }
            if t.elapsed() > within {
                bail!(
                    "{} does not listen on port {port} after {within:?}; its log ends:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fails with a clear message when a port the farm needs is taken.
pub fn ensure_free(port: u16, what: &str) -> anyhow::Result<()> {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!("port {port} ({what}) is in use: stop what holds it, or pass --ports auto");
    }
    Ok(())
}

/// A free port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// An executable: `path` if it exists, else `name` on the PATH.
pub fn find(path: PathBuf, name: &str, install: &str) -> anyhow::Result<PathBuf> {
    if path.exists() {
        return Ok(path);
    }
    if Command::new(name).arg("--version").output().is_ok() {
        return Ok(name.into());
    }
    bail!("{name} is missing: {install}")
}

/// The farm's own binaries, next to this one (same build profile).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} is missing: build it with this demo (`make demo` does: cargo build --release -p medrollup-coordinator -p medrollup-prover -p medrollup-client -p medrollup-demo)",
            p.display()
        );
    }
    Ok(p)
}
