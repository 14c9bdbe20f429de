//! The nats-server configuration a farm runs with: one account with
//! JetStream, and a user per role, each allowed only what its role needs.
//!
//! - The coordinator: everything (it creates the streams, the job consumer
//!   and the key bucket, publishes jobs, reads results).
//! - Clients: publish transactions, read answers.
//! - A worker: take and ack jobs, read the key bucket, and publish its
//!   results and heartbeats on its own subjects only
//!   ([`subjects::result`]`(name)`, [`subjects::heartbeat`]`(name)`): with a
//!   user per hospital, no worker can fail a job, or beat, in another's name
//!   (the coordinator counts a result only on its worker's own subject).
//!   A worker user with no name may use any name: a farm that shares one
//!   credential among its workers cannot tell them apart.
//!
//! `medrollup-coordinator nats-config` writes such a configuration with
//! generated passwords; the demo and the tests run with it.

use crate::{streams, subjects};
use std::fmt::Write;
use std::path::Path;

/// What a user may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The coordinator: everything.
    Coordinator,
    /// Clients: publish transactions, read answers.
    Clients,
    /// A worker: the job queue, the key bucket, and results and heartbeats
    /// in the name given (any name when `None`).
    Worker(Option<String>),
}

/// A user of the farm's account.
#[derive(Clone, Debug)]
pub struct User {
    /// The user name.
    pub user: String,
    /// Its password.
    pub password: String,
    /// What it may do.
    pub role: Role,
}

/// Longest worker name: it is a subject token, and the coordinator drops
/// results under longer names.
pub const MAX_WORKER_NAME: usize = 128;

/// Checks a worker name: 1 to [`MAX_WORKER_NAME`] bytes of letters, digits,
/// `-` and `_` (it is the last token of the worker's subjects).
pub fn check_worker_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_WORKER_NAME {
        return Err(format!("{} bytes; a worker name has 1 to {MAX_WORKER_NAME}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!("{c:?} is not a letter, a digit, '-' or '_'"));
    }
    Ok(())
}

/// The NATS user name of the worker named `name`.
pub fn worker_user(name: &str) -> String {
    format!("worker-{name}")
}

/// The inbox prefix of the worker named `name` (its connection's
/// `custom_inbox_prefix`): its user may subscribe only under it, so no
/// worker sees the jobs delivered to another's fetches, nor their ack
/// subjects.
pub fn worker_inbox(name: &str) -> String {
    format!("_INBOX.worker.{name}")
}

/// The clients' inbox prefix (their connections' `custom_inbox_prefix`).
pub const CLIENTS_INBOX: &str = "_INBOX.clients";

/// What a configuration cannot be made of.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A bad worker name.
    #[error("worker {name:?}: {why}")]
    WorkerName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A user name, password, host or path nats-server would misread.
    #[error(
        "{0:?}: names, passwords, the host and the store path are printable ASCII, at least 1 character, with no quote or backslash"
    )]
    Unquotable(String),
    /// Two users with one name.
    #[error("user {0:?} is given twice")]
    Duplicate(String),
}

/// A string nats-server reads back as itself inside double quotes.
fn quotable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// The configuration: nats-server on `host:port` with JetStream under
/// `store_dir`, and `users` in one account.
pub fn server_config(host: &str, port: u16, store_dir: &Path, users: &[User]) -> Result<String, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    let mut entries = String::new();
    for u in users {
        if !quotable(&u.user) || !quotable(&u.password) {
            return Err(ConfigError::Unquotable(u.user.clone()));
        }
        if !seen.insert(u.user.as_str()) {
            return Err(ConfigError::Duplicate(u.user.clone()));
        }
        let permissions = match &u.role {
            Role::Coordinator => String::new(),
            Role::Clients => format!(
                r#", permissions: {{
          publish: {{ allow: ["{tx}"] }}
          subscribe: {{ allow: ["{CLIENTS_INBOX}.>", "{answers}.>"] }}
      }}"#,
                tx = subjects::TX_SUBMIT,
                answers = subjects::ANSWER_PREFIX,
            ),
            Role::Worker(name) => {
                let (token, inbox) = match name {
                    Some(n) => {
                        check_worker_name(n)
                            .map_err(|why| ConfigError::WorkerName { name: n.clone(), why })?;
                        (n.as_str(), worker_inbox(n))
                    }
                    None => ("*", "_INBOX".to_string()),
                };
                worker_permissions(token, &inbox)
            }
        };
        let _ =
            write!(entries, "\n      {{ user: \"{}\", password: \"{}\"{permissions} }}", u.user, u.password);
    }
    let store = store_dir.display().to_string();
    for s in [host, store.as_str()] {
        if !quotable(s) {
            return Err(ConfigError::Unquotable(s.to_string()));
        }
    }
    Ok(format!(
        r#"# medrollup's NATS: one account with JetStream; each user may do what its
# role needs (see medrollup_wire::natsconf).
host: "{host}"
port: {port}
# A job carries its batch's witness.
max_payload: 8MB
jetstream {{ store_dir: "{store}" }}
accounts {{
  MEDROLLUP {{
    jetstream: enabled
    users: [{entries}
    ]
  }}
}}
"#
    ))
}

/// A worker's permissions, its results and heartbeats under `token` (a
/// name, or `*` for any), its replies under `inbox`. It reads proving keys
/// from the key bucket by direct gets and may create no consumer there: the
/// server delivers a push consumer's messages to whatever subject its maker
/// names, publish permissions or not.
fn worker_permissions(token: &str, inbox: &str) -> String {
    let jobs = streams::JOBS;
    let consumer = streams::JOBS_CONSUMER;
    let keys = format!("OBJ_{}", streams::KEYS_BUCKET);
    format!(
        r#", permissions: {{
          publish: {{ allow: [
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.{jobs}",
            "$JS.API.CONSUMER.INFO.{jobs}.{consumer}",
            "$JS.API.CONSUMER.MSG.NEXT.{jobs}.{consumer}",
            "$JS.ACK.{jobs}.{consumer}.>",
            "$JS.API.STREAM.INFO.{keys}",
            "$JS.API.STREAM.MSG.GET.{keys}",
            "$JS.API.DIRECT.GET.{keys}",
            "$JS.API.DIRECT.GET.{keys}.>",
            "{results}.{token}",
            "{heartbeat}.{token}"
          ] }}
          subscribe: {{ allow: ["{inbox}.>"] }}
      }}"#,
        results = subjects::RESULT_PREFIX,
        heartbeat = subjects::HEARTBEAT_PREFIX,
    )
}

/// `url` for a log or an error: a password in it (`nats://user:pw@host`)
/// shown as `***`, a bare `user@` (which may be a token) too, in each URL
/// of a comma-separated list.
pub fn redacted(url: &str) -> String {
    url.split(',').map(redacted_one).collect::<Vec<_>>().join(",")
}

fn redacted_one(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    // The user part ends at the last '@' (a password may hold '/' or '@').
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
    let hidden = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{scheme}{hidden}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_in_a_url_are_hidden() {
        assert_eq!(
            redacted("nats://coordinator:s3cret@10.0.0.1:4222"),
            "nats://coordinator:***@10.0.0.1:4222"
        );
        assert_eq!(redacted("nats://t0ken@host:4222/x"), "nats://***@host:4222/x");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted("nats://u:p@ss@host"), "nats://u:***@host", "the last @ ends the user part");
        assert_eq!(redacted("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(redacted("nats://u:pa/ss@host"), "nats://u:***@host", "a '/' in the password");
        assert_eq!(redacted("nats://u:p@h1,nats://u:q@h2"), "nats://u:***@h1,nats://u:***@h2", "a list");
        assert_eq!(redacted("u:p@h1:4222"), "u:***@h1:4222", "no scheme");
    }

    fn user(user: &str, role: Role) -> User {
        User { user: user.into(), password: format!("{user}-secret"), role }
    }

    #[test]
    fn each_worker_may_publish_results_and_heartbeats_only_in_its_own_name() {
        let users = [
            user("coordinator", Role::Coordinator),
            user("clients", Role::Clients),
            user(&worker_user("hospital-a"), Role::Worker(Some("hospital-a".into()))),
            user("shared", Role::Worker(None)),
        ];
        let conf = server_config("127.0.0.1", 4222, Path::new("/var/lib/nats"), &users).unwrap();
        let block = |u: &str| {
            let start = conf.find(&format!("user: \"{u}\"")).unwrap();
            let end = conf[start..].find("\n      {").map_or(conf.len(), |e| start + e);
            conf[start..end].to_string()
        };
        let a = block("worker-hospital-a");
        assert!(a.contains("\"medrollup.results.hospital-a\""), "{a}");
        assert!(a.contains("\"medrollup.workers.heartbeat.hospital-a\""), "{a}");
        assert!(!a.contains("results.*") && !a.contains(subjects::TX_SUBMIT), "{a}");
        assert!(!a.contains("CONSUMER.CREATE") && !a.contains("$JS.FC"), "no consumer of its own: {a}");
        assert!(
            a.contains("subscribe: { allow: [\"_INBOX.worker.hospital-a.>\"] }"),
            "its own inbox only: {a}"
        );
        let shared = block("shared");
        assert!(shared.contains("\"medrollup.results.*\"") && shared.contains("[\"_INBOX.>\"]"), "{shared}");
        let c = block("clients");
        assert!(c.contains(subjects::TX_SUBMIT) && !c.contains("$JS.ACK"), "{c}");
        assert!(c.contains("\"_INBOX.clients.>\"") && !c.contains("\"_INBOX.>\""), "{c}");
        assert!(!block("coordinator").contains("permissions"), "the coordinator may do everything");
        assert!(conf.contains("store_dir: \"/var/lib/nats\"") && conf.contains("port: 4222"), "{conf}");
    }

    #[test]
    fn names_and_passwords_nats_would_misread_are_refused() {
        let bad_name = [user("w", Role::Worker(Some("a.b".into())))];
        let e = server_config("h", 1, Path::new("/s"), &bad_name).unwrap_err();
        assert!(e.to_string().contains("'.' is not a letter"), "{e}");
        let mut quoted = user("w", Role::Clients);
        quoted.password = "pa\"ss".into();
        assert_eq!(
            server_config("h", 1, Path::new("/s"), &[quoted]),
            Err(ConfigError::Unquotable("w".into()))
        );
        let twice = [user("w", Role::Clients), user("w", Role::Coordinator)];
        assert_eq!(server_config("h", 1, Path::new("/s"), &twice), Err(ConfigError::Duplicate("w".into())));
        assert!(check_worker_name(&"w".repeat(129)).unwrap_err().contains("1 to 128"));
        assert!(check_worker_name("hospital-a_2").is_ok());
    }
}
