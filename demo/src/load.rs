//! The simulated users: hospitals register doctors; in each clinic a patient
//! registers, lets a doctor write, the doctor adds a record and reads it, the
//! patient shares it with a second doctor for a second opinion, the second
//! doctor reads it, the first updates it, the patient revokes the second
//! doctor (the record is re-keyed), the second doctor's stale client tries
//! once more and is refused, and the patient checks the audit log. Every step
//! is a client library call with real keys, real envelopes and reads checked
//! against L1.

use anyhow::{Context, bail};
use medrollup_circuits::state::AUDIT_READ;
use medrollup_circuits::tx::{ConsentTarget, Scope, TxBody};
use medrollup_client::envelope::example_bundle;
use medrollup_client::keystore::Identity;
use medrollup_client::session::{ClientError, Endpoints, Session, Submission};
use std::sync::Arc;
use tokio::sync::Mutex;

/// What one clinic did.
#[derive(Debug, Default)]
pub struct ClinicReport {
    /// Every transaction its users sent.
    pub submissions: Vec<Submission>,
    /// Records read (and decrypted).
    pub reads: usize,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

fn days(n: u64) -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + n * 86_400
}

async fn keys() -> anyhow::Result<Identity> {
    Ok(tokio::task::spawn_blocking(Identity::generate).await?)
}

/// Runs clinic `i`: its patient is account 1000 + i, its doctors 100000 + 2i
/// and + 1, registered by `hospital`.
pub async fn clinic(i: u64, endpoints: Endpoints, hospital: Arc<Mutex<Session>>) -> ClinicReport {
    let mut report = ClinicReport::default();
    let (pid, a_id, b_id) = (1000 + i, 100_000 + 2 * i, 100_001 + 2 * i);
    let mut sessions = Vec::new();
    let r = async {
        let mut patient = Session::open(&endpoints, pid, keys().await?).await?;
        let mut a = Session::open(&endpoints, a_id, keys().await?).await?;
        let mut b = Session::open(&endpoints, b_id, keys().await?).await?;
        let outcome = run(i, &hospital, &mut patient, &mut a, &mut b, &mut report.reads).await;
        sessions.extend([patient, a, b]);
        outcome
    }
    .await;
    if let Err(e) = r {
        report.error = Some(format!("clinic {i}: {e:#}"));
    }
    for s in &sessions {
        report.submissions.extend(s.journal().iter().cloned());
    }
    report
}

async fn run(
    i: u64,
    hospital: &Mutex<Session>,
    patient: &mut Session,
    a: &mut Session,
    b: &mut Session,
    reads: &mut usize,
) -> anyhow::Result<()> {
    let (pid, a_id, b_id) = (patient.account(), a.account(), b.account());
    {
        let mut h = hospital.lock().await;
        h.register_doctor(a_id, &a.identity().public()).await.context("registering doctor A")?;
        h.register_doctor(b_id, &b.identity().public()).await.context("registering doctor B")?;
    }
    patient.register_patient().await.context("registering the patient")?;
    patient.grant(a_id, Scope::ReadWrite, ConsentTarget::AllRecords, days(30)).await.context("granting A")?;
    let label = format!("patient-{pid}");
    let first = example_bundle(&label, 4_000 + 1_500 * (i as usize % 8));
    let record = a.add_record(pid, &first).await.context("A adds a record")?;
    if a.read(record).await.context("A reads")?.bundle != first {
        bail!("A read back another record");
    }
    *reads += 1;
    let c_b = patient
        .grant(b_id, Scope::Read, ConsentTarget::Record(record), days(7))
        .await
        .context("granting B")?;
    if b.read(record).await.context("B reads")?.bundle != first {
        bail!("B read another record");
    }
    *reads += 1;
    let second = example_bundle(&label, 8_000 + 1_500 * (i as usize % 8));
    a.update_record(record, &second).await.context("A updates")?;
    patient.revoke(c_b).await.context("revoking B")?;
    // B's client is stale: it logs a read under the revoked consent anyway.
    match b.submit(TxBody::LogAccess { record, consent: c_b }).await {
        Err(ClientError::Rejected { code, .. }) if code == "consent_revoked" => {}
        Err(e) => return Err(e).context("B's stale read"),
        Ok(_) => bail!("a read under a revoked consent was accepted"),
    }
    let audit = patient.audit_log().await.context("the patient's audit log")?;
    for reader in [a_id, b_id] {
        if !audit.iter().any(|(_, e)| e.kind == AUDIT_READ && e.actor == reader && e.record == record) {
            bail!("the audit log misses the read by {reader}");
        }
    }
    Ok(())
}
