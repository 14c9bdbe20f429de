//! `medrollup-client`: the patients', doctors' and hospitals' command line.
//! Every command is one library call of `medrollup_client::session`.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use medrollup_circuits::eddsa;
use medrollup_circuits::state::AUDIT_EMERGENCY;
use medrollup_circuits::tx::{ConsentTarget, Scope};
use medrollup_client::keystore::{Identity, KdfParams, Keystore, PublicIdentity};
use medrollup_client::portal::Portal;
use medrollup_client::session::{Endpoints, Session};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "medrollup-client", version, about = "Patients' and doctors' client of a medrollup rollup")]
struct Cli {
    /// The keystore file (keys are encrypted under MEDROLLUP_PASSWORD).
    #[arg(long, global = true, env = "MEDROLLUP_KEYSTORE", default_value = "medrollup-keystore.json")]
    keystore: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Conn {
    /// Your account id.
    #[arg(long, env = "MEDROLLUP_ACCOUNT")]
    account: u64,
    /// The coordinator's HTTP API.
    #[arg(long, env = "MEDROLLUP_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    coordinator: String,
    /// An IPFS node's RPC API for records (default: the coordinator's store).
    #[arg(long, env = "MEDROLLUP_IPFS_API")]
    ipfs_api: Option<String>,
    /// Ethereum JSON-RPC.
    #[arg(long, env = "MEDROLLUP_L1_RPC", default_value = "http://127.0.0.1:8545")]
    l1_rpc: String,
    /// The rollup contract, which every answer is checked against: required
    /// by the commands that use keys (never taken from the coordinator).
    #[arg(long, env = "MEDROLLUP_ROLLUP")]
    rollup: Option<alloy::primitives::Address>,
    /// Seconds to wait for L1 to reach the coordinator's state.
    #[arg(long, default_value_t = 300)]
    l1_wait_s: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Keys and the keystore.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Register yourself as a patient at --account.
    Register {
        #[command(flatten)]
        conn: Conn,
    },
    /// (Hospital) register a doctor from their public keys file.
    RegisterDoctor {
        #[command(flatten)]
        conn: Conn,
        /// The doctor's account id.
        #[arg(long)]
        doctor: u64,
        /// The doctor's `keys public` file.
        #[arg(long)]
        public: PathBuf,
    },
    /// Publish your public keys (done by `register`; again after a restore).
    PublishKeys {
        #[command(flatten)]
        conn: Conn,
    },
    /// (Doctor) add a record (a FHIR R4 Bundle, JSON) for a patient.
    Add {
        #[command(flatten)]
        conn: Conn,
        /// The patient.
        #[arg(long)]
        patient: u64,
        /// The bundle.
        #[arg(long)]
        file: PathBuf,
    },
    /// Write a new version of a record (its owner, or its author with consent).
    Update {
        #[command(flatten)]
        conn: Conn,
        /// The record.
        #[arg(long)]
        record: u64,
        /// The new bundle.
        #[arg(long)]
        file: PathBuf,
        /// The version the new bundle was made from (`read` prints it): if
        /// the record has moved on since, the update is refused instead of
        /// overwriting what came between. Without it, the version on L1 now.
        #[arg(long)]
        from_version: Option<u64>,
    },
    /// Read a record (your consent is checked on L1 and the read is logged).
    Read {
        #[command(flatten)]
        conn: Conn,
        /// The record.
        #[arg(long)]
        record: u64,
        /// Write the bundle here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// (Doctor) break-glass read without consent: logged and flagged.
    Emergency {
        #[command(flatten)]
        conn: Conn,
        /// The record.
        #[arg(long)]
        record: u64,
        /// Why (its hash goes into the audit log).
        #[arg(long)]
        reason: String,
        /// Write the bundle here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// (Patient) give a doctor or hospital access.
    Grant {
        #[command(flatten)]
        conn: Conn,
        /// Who.
        #[arg(long)]
        grantee: u64,
        /// Also let them add and update records.
        #[arg(long)]
        write: bool,
        /// One record (default: all your records, present and future).
        #[arg(long)]
        record: Option<u64>,
        /// Days until it lapses (1 to 3650).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650))]
        days: u64,
    },
    /// (Patient) share the records a consent covers with its grantee
    /// again: finishes a grant whose sharing was cut short.
    Share {
        #[command(flatten)]
        conn: Conn,
        /// The consent.
        #[arg(long)]
        consent: u64,
    },
    /// (Patient) take access back: the covered records are re-keyed (run it
    /// again to finish one that was cut short).
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// The consent.
        #[arg(long)]
        consent: u64,
    },
    /// (Patient) delete a record: its content, the only place its keys are
    /// kept, is released from our nodes (run it again to finish one that was
    /// cut short).
    Delete {
        #[command(flatten)]
        conn: Conn,
        /// The record.
        #[arg(long)]
        record: u64,
    },
    /// Your consents (granted or held), checked against L1.
    Consents {
        #[command(flatten)]
        conn: Conn,
    },
    /// Who read your records (and what you read), checked against L1.
    Audit {
        #[command(flatten)]
        conn: Conn,
    },
    /// Serve your web page on this machine (the keystore is created or
    /// unlocked from the page; the keys stay in this process).
    Portal {
        #[command(flatten)]
        conn: Conn,
        /// Where to listen: a loopback address only (port 0: any free one).
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: std::net::SocketAddr,
        /// Lock the unlocked keys after this many minutes with no use of the page.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=1440))]
        idle_lock_min: u64,
    },
    /// Check the rollup from outside (no keys, no coordinator): replay every
    /// batch on L1 from the data its event points to, and check that it
    /// gives the roots and commitment L1 holds.
    VerifyChain {
        /// Ethereum JSON-RPC.
        #[arg(long, env = "MEDROLLUP_L1_RPC", default_value = "http://127.0.0.1:8545")]
        l1_rpc: String,
        /// The rollup contract.
        #[arg(long, env = "MEDROLLUP_ROLLUP")]
        rollup: alloy::primitives::Address,
        /// An IPFS node's RPC API holding the batch data (a coordinator's
        /// HTTP API serves its store there too).
        #[arg(long, env = "MEDROLLUP_IPFS_API", default_value = "http://127.0.0.1:5001")]
        ipfs_api: String,
        /// The rollup's genesis JSON; default: the sample genesis at --levels.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// Tree height of the sample genesis.
        #[arg(long, default_value_t = medrollup_l1::canonical::SHAPE.levels)]
        levels: usize,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Create a keystore with new keys.
    New {
        /// An existing Baby Jubjub key (hex) instead of a new one, e.g. a
        /// hospital's key from its genesis entry.
        #[arg(long, env = "MEDROLLUP_SIGNING_KEY", hide_env_values = true)]
        signing_key_hex: Option<String>,
    },
    /// Print your public keys (no password needed).
    Public {
        /// Write them here (what a hospital needs to register a doctor).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Copy the keystore to a file, optionally under a new password
    /// (MEDROLLUP_NEW_PASSWORD).
    Export {
        /// The copy.
        #[arg(long)]
        out: PathBuf,
    },
    /// Take a keystore file (opened with MEDROLLUP_PASSWORD) as yours.
    Import {
        /// The file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Change the keystore's password to MEDROLLUP_NEW_PASSWORD.
    Passwd,
}

fn password(var: &str) -> anyhow::Result<String> {
    let p = std::env::var(var).with_context(|| format!("set {var} to the keystore password"))?;
    if p.is_empty() {
        bail!("{var} is empty");
    }
    Ok(p)
}

fn write_new(path: &Path, ks: &Keystore) -> anyhow::Result<()> {
    Ok(ks.write_new(path)?)
}

fn unlock(path: &Path) -> anyhow::Result<Identity> {
    let ks = Keystore::read(path).with_context(|| format!("keystore {}", path.display()))?;
    ks.open(&password("MEDROLLUP_PASSWORD")?).with_context(|| format!("keystore {}", path.display()))
}

async fn session(keystore: &Path, conn: &Conn) -> anyhow::Result<Session> {
    // Before the password is asked: nothing runs without the contract.
    let endpoints = endpoints(conn).await?;
    let identity = unlock(keystore)?;
    Ok(Session::open(&endpoints, conn.account, identity).await?)
}

/// Where `conn` points. The rollup contract must be given: every answer is
/// checked against it, so a coordinator that named it could name its own.
async fn endpoints(conn: &Conn) -> anyhow::Result<Endpoints> {
    let Some(rollup) = conn.rollup else {
        // What the coordinator says, to compare with the hospital's word.
        let url = format!("{}/l1", conn.coordinator.trim_end_matches('/'));
        let ask = async {
            let v: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            v["rollup"].as_str().map(String::from)
        };
        let reported = tokio::time::timeout(Duration::from_secs(5), ask).await.ok().flatten();
        let hint = reported.map_or_else(String::new, |r| {
            format!(
                " (the coordinator at {} names {r}: pass it only if your hospital or the rollup's \
                 published deployment names the same)",
                conn.coordinator
            )
        });
        bail!(
            "--rollup (or MEDROLLUP_ROLLUP) is required: every answer is checked against the rollup \
             contract, so it is not taken from the coordinator{hint}"
        );
    };
    Ok(Endpoints {
        coordinator: conn.coordinator.clone(),
        ipfs_api: conn.ipfs_api.clone(),
        l1_rpc: conn.l1_rpc.clone(),
        rollup,
        l1_wait: Duration::from_secs(conn.l1_wait_s),
    })
}

async fn portal(
    keystore: &Path,
    conn: &Conn,
    listen: std::net::SocketAddr,
    idle_lock: Duration,
) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!(
            "--listen {listen}: the portal holds your keys' powers, so it listens on this machine only \
             (127.0.0.1 or [::1])"
        );
    }
    let endpoints = endpoints(conn).await?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let keystore = std::path::absolute(keystore)?;
    let p = std::sync::Arc::new(
        Portal::new(keystore.clone(), conn.account, endpoints, addr).with_idle_lock(idle_lock),
    );
    println!("{}", p.url());
    eprintln!(
        "the web page of account {} (keys: {}): open the address above in a browser on this machine",
        conn.account,
        keystore.display()
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping: a running flow is let finish (Ctrl-C again to quit now)");
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        });
    };
    medrollup_client::portal::serve(listener, p, shutdown).await?;
    Ok(())
}

fn output(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match out {
        Some(p) => medrollup_client::keystore::write_private(p, bytes)
            .with_context(|| format!("writing {}", p.display())),
        None => {
            use std::io::Write;
            std::io::stdout().write_all(bytes)?;
            Ok(())
        }
    }
}

fn read_file(p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ks = &cli.keystore;
    match cli.command {
        Command::Keys(k) => keys(ks, k)?,
        Command::VerifyChain { l1_rpc, rollup, ipfs_api, genesis, levels } => {
            verify_chain(&l1_rpc, rollup, &ipfs_api, genesis.as_deref(), levels).await?
        }
        Command::Register { conn } => {
            let mut s = session(ks, &conn).await?;
            s.register_patient().await?;
            println!("registered patient {} and published its keys", conn.account);
        }
        Command::RegisterDoctor { conn, doctor, public } => {
            let p: PublicIdentity = serde_json::from_slice(&read_file(&public)?)
                .with_context(|| format!("{} is not a public keys file", public.display()))?;
            let mut s = session(ks, &conn).await?;
            s.register_doctor(doctor, &p).await?;
            println!("registered doctor {doctor} and published its keys");
        }
        Command::PublishKeys { conn } => {
            session(ks, &conn).await?.publish_keys().await?;
            println!("published the keys of account {}", conn.account);
        }
        Command::Add { conn, patient, file } => {
            let bundle = read_file(&file)?;
            let record = session(ks, &conn).await?.add_record(patient, &bundle).await?;
            println!("record {record} added for patient {patient}");
        }
        Command::Update { conn, record, file, from_version } => {
            let bundle = read_file(&file)?;
            let cid = session(ks, &conn).await?.update_record_from(record, from_version, &bundle).await?;
            println!("record {record} updated: {cid}");
        }
        Command::Read { conn, record, out } => {
            let r = session(ks, &conn).await?.read(record).await?;
            match r.consent {
                Some(c) => {
                    eprintln!(
                        "record {record} version {} ({}), read under consent {c}; the read is logged",
                        r.leaf.version, r.cid
                    )
                }
                None => eprintln!("record {record} version {} ({}), your own", r.leaf.version, r.cid),
            }
            output(out.as_deref(), &r.bundle)?;
        }
        Command::Emergency { conn, record, reason, out } => {
            let r = session(ks, &conn).await?.emergency_read(record, &reason).await?;
            eprintln!("EMERGENCY access to record {record} logged and flagged for review");
            output(out.as_deref(), &r.bundle)?;
        }
        Command::Grant { conn, grantee, write, record, days } => {
            let scope = if write { Scope::ReadWrite } else { Scope::Read };
            let target = record.map_or(ConsentTarget::AllRecords, ConsentTarget::Record);
            let mut s = session(ks, &conn).await?;
            let expiry = s.now().await? + days * 86_400;
            let c = s.grant(grantee, scope, target, expiry).await?;
            println!("consent {c}: {grantee} may {scope:?} {target:?} until {expiry}");
        }
        Command::Share { conn, consent } => {
            let records = session(ks, &conn).await?.share(consent).await?;
            println!("consent {consent}: records shared now: {records:?}");
        }
        Command::Revoke { conn, consent } => {
            let records = session(ks, &conn).await?.revoke(consent).await?;
            println!("consent {consent} revoked; records re-keyed: {records:?}");
        }
        Command::Delete { conn, record } => {
            let cid = session(ks, &conn).await?.delete(record).await?;
            println!("record {record} deleted; {cid} unpinned");
        }
        Command::Consents { conn } => {
            let s = session(ks, &conn).await?;
            for (id, c) in s.my_consents().await? {
                let state = if c.revoked { "revoked" } else { "active" };
                println!(
                    "consent {id}: patient {} -> {} {:?} {:?} until {} ({state})",
                    c.patient, c.grantee, c.scope, c.target, c.expiry
                );
            }
        }
        Command::Portal { conn, listen, idle_lock_min } => {
            portal(ks, &conn, listen, Duration::from_secs(idle_lock_min * 60)).await?
        }
        Command::Audit { conn } => {
            let s = session(ks, &conn).await?;
            for (i, e) in s.audit_log().await? {
                let what = if e.kind == AUDIT_EMERGENCY { "EMERGENCY read" } else { "read" };
                println!(
                    "#{i} at {}: account {} {what} record {} of patient {} (consent {})",
                    e.timestamp, e.actor, e.record, e.patient, e.consent
                );
            }
        }
    }
    Ok(())
}

async fn verify_chain(
    l1_rpc: &str,
    rollup: alloy::primitives::Address,
    ipfs_api: &str,
    genesis: Option<&Path>,
    levels: usize,
) -> anyhow::Result<()> {
    use medrollup_l1::submitter as l1;
    let genesis: medrollup_circuits::state::Genesis = match genesis {
        Some(p) => serde_json::from_slice(&read_file(p)?)
            .with_context(|| format!("{} is not a genesis JSON", p.display()))?,
        None => medrollup_circuits::sample::genesis(levels),
    };
    let provider = l1::connect_read_only(l1_rpc)?;
    let store = medrollup_storage::kubo::KuboStore::new(ipfs_api);
    let done = medrollup_client::replay::replay_chain(&provider, rollup, &store, &genesis, |i, n| {
        println!("batch {i}: {n} transactions replay to L1's roots and commitment")
    })
    .await?;
    println!(
        "{} batches, {} transactions: the published data gives L1's state",
        done.batches, done.transactions
    );
    let now = l1::chain_state(&provider, rollup).await?;
    if now.count == done.batches {
        anyhow::ensure!(
            now.root == done.root,
            "the replayed root {} is not the rollup's current root {}",
            done.root,
            now.root
        );
        println!("root {} = the rollup's current root", done.root);
    } else {
        println!("root {} after batch {}; L1 has {} batches by now", done.root, done.batches, now.count);
    }
    Ok(())
}

fn keys(path: &Path, cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::New { signing_key_hex } => {
            let pw = password("MEDROLLUP_PASSWORD")?;
            let identity = match signing_key_hex {
                None => Identity::generate(),
                Some(h) => {
                    let b: [u8; 32] = hex::decode(h.trim())
                        .context("the signing key is not hex")?
                        .try_into()
                        .map_err(|_| anyhow::anyhow!("the signing key is 32 bytes"))?;
                    Identity::from_parts(
                        eddsa::PrivateKey::from_bytes(b),
                        Identity::generate().rsa_key().clone(),
                    )
                }
            };
            write_new(path, &Keystore::seal(&identity, &pw, KdfParams::DEFAULT)?)?;
            println!(
                "{}: new keys, rsa key hash {}",
                path.display(),
                medrollup_client::session::dec(&identity.public().rsa_key_hash)
            );
        }
        KeysCmd::Public { out } => {
            let ks = Keystore::read(path)?;
            output(out.as_deref(), &serde_json::to_vec_pretty(&ks.public)?)?;
        }
        KeysCmd::Export { out } => {
            let ks = Keystore::read(path)?;
            let pw = password("MEDROLLUP_PASSWORD")?;
            ks.open(&pw)?;
            let copy = match std::env::var("MEDROLLUP_NEW_PASSWORD") {
                Ok(new) if !new.is_empty() => ks.change_password(&pw, &new, KdfParams::DEFAULT)?,
                _ => ks,
            };
            write_new(&out, &copy)?;
            println!("exported to {}", out.display());
        }
        KeysCmd::Import { from } => {
            let ks = Keystore::read(&from)?;
            ks.open(&password("MEDROLLUP_PASSWORD")?)?;
            write_new(path, &ks)?;
            println!("imported {} as {}", from.display(), path.display());
        }
        KeysCmd::Passwd => {
            let ks = Keystore::read(path)?;
            let changed = ks.change_password(
                &password("MEDROLLUP_PASSWORD")?,
                &password("MEDROLLUP_NEW_PASSWORD")?,
                KdfParams::DEFAULT,
            )?;
            changed.write(path)?; // written aside, then renamed over
            println!("password changed");
        }
    }
    Ok(())
}
