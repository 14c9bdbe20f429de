//! Records end to end through storage (a report, not a test): "encrypt +
//! store" is FHIR validation, AES-256-GCM under a fresh key, RSA-OAEP-SHA256
//! wrapping for the patient and one doctor, the envelope's JSON, and `add`;
//! "fetch + decrypt" is `cat` (the CID checked), parsing, unwrapping with the
//! doctor's RSA key, decryption and validation. For 10 KB, 1 MB and 10 MB
//! bundles, on the embedded store and on a real IPFS node (js-ipfs, started
//! here). Medians of `MEDROLLUP_BENCH_RUNS` runs (default 5).
//!
//! `cargo bench -p medrollup-client --bench records`

use medrollup_client::envelope::Envelope;
use medrollup_client::keystore::Identity;
use medrollup_storage::content::{ContentStore, EmbeddedStore};
use medrollup_storage::devnode::IpfsNode;
use medrollup_storage::kubo::KuboStore;
use std::time::{Duration, Instant};

/// A FHIR R4 bundle of about `size` bytes: a patient and observations.
fn bundle(size: usize) -> Vec<u8> {
    medrollup_client::envelope::example_bundle("p1", size)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(
    store: &dyn ContentStore,
    bytes: &[u8],
    patient: &Identity,
    doctor: &Identity,
    runs: usize,
) -> (Duration, Duration, usize) {
    let (mut put, mut get) = (Vec::new(), Vec::new());
    let mut stored = 0;
    for run in 0..runs {
        let t = Instant::now();
        let (env, _) =
            Envelope::seal(bytes, 400 + run as u64, &[&patient.public(), &doctor.public()]).unwrap();
        let blob = env.to_bytes();
        stored = blob.len();
        let cid = store.add(blob).await.unwrap();
        put.push(t.elapsed());
        let t = Instant::now();
        let back = Envelope::from_bytes(&store.cat(cid).await.unwrap()).unwrap().open(doctor).unwrap();
        get.push(t.elapsed());
        assert_eq!(back.len(), bytes.len());
    }
    (median(put), median(get), stored)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("MEDROLLUP_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let (patient, doctor) = (Identity::generate(), Identity::generate());
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    let node = match IpfsNode::start() {
        Ok(n) => Some(n),
        Err(e) => {
            println!("(no IPFS node: {e}; run scripts/ipfs)");
            None
        }
    };
    let kubo = node.as_ref().map(|n| KuboStore::new(n.api()));
    println!("| record | envelope | store | encrypt + store (ms) | fetch + decrypt (ms) |");
    println!("| ---: | ---: | --- | ---: | ---: |");
    for size in [10_000usize, 1_000_000, 10_000_000] {
        let bytes = bundle(size);
        let mut stores: Vec<(&str, &dyn ContentStore)> = vec![("embedded", &embedded)];
        if let Some(k) = &kubo {
            stores.push(("IPFS node (js-ipfs)", k));
        }
        for (name, store) in stores {
            let (put, get, stored) = measure(store, &bytes, &patient, &doctor, runs).await;
            println!(
                "| {} KB | {} KB | {name} | {:.1} | {:.1} |",
                bytes.len() / 1000,
                stored / 1000,
                put.as_secs_f64() * 1e3,
                get.as_secs_f64() * 1e3
            );
        }
    }
}
