//! The farm landing its batches on a real anvil: transactions over NATS,
//! proofs from worker processes, and the rollup contract's roots equal to the
//! coordinator's, batch by batch, through a reorg and an anvil restart with
//! its state reloaded.

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use common::*;
use medrollup_coordinator::workload;
use medrollup_l1::canonical;
use medrollup_l1::contracts::MedRollup;
use medrollup_l1::devnet::{Anvil, DEV_KEY, DEV_OWNER};
use medrollup_l1::submitter::{self, L1Config};
use medrollup_wire::TxStatus;
use std::time::Duration;

fn provider(url: &str) -> alloy::providers::DynProvider {
    submitter::connect(&L1Config::local(url, submitter::parse_key(DEV_KEY).unwrap())).unwrap()
}

async fn rpc(url: &str, method: &'static str, params: serde_json::Value) -> serde_json::Value {
    provider(url).raw_request(method.into(), params).await.unwrap()
}

/// (index, new root) of every `BatchSubmitted` in the canonical chain.
async fn events(url: &str, rollup: Address) -> Vec<(u64, B256)> {
    submitter::batch_events(&provider(url), rollup).await.unwrap()
}

fn root_of(dec: &serde_json::Value) -> B256 {
    U256::from_str_radix(dec.as_str().expect("a decimal root"), 10).unwrap().into()
}

async fn landed(http: &str) -> Option<u64> {
    get_json(&format!("{http}/l1")).await["last_landed"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proven_batches_land_on_anvil_in_order_through_a_reorg_and_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let keys = keys_dir_seeded(canonical::SHAPE, canonical::SEED);
    let state = dir.path().join("anvil-state.json");
    let state_arg = state.to_str().unwrap();
    let port = free_port();
    let anvil = Anvil::start(port, &["--block-time", "1", "--dump-state", state_arg]).unwrap();
    let url = anvil.url();
    let http_port = free_port();
    let http = format!("http://127.0.0.1:{http_port}");
    let data = dir.path().join("coordinator");
    let coordinator = Coordinator::start(&CoordinatorOpts {
        l1: Some((&url, DEV_KEY, 2)),
        ..CoordinatorOpts::new(&nats, &keys, &data, dir.path(), http_port)
    });
    let _w1 = start_worker(&nats, "hospital-a", &dir.path().join("cache-a"), dir.path());
    let _w2 = start_worker(&nats, "hospital-b", &dir.path().join("cache-b"), dir.path());
    let status = get_json(&format!("{http}/l1")).await;
    let rollup: Address = status["rollup"].as_str().unwrap().parse().unwrap();

    // Three clinics' transactions, one after another.
    let load = workload::generate(3, now(), "l1");
    let client = Client::connect(&nats).await;
    let mut accepted = 0;
    let mut steps = load.admin.clone();
    steps.extend(load.clinics.concat());
    let submit = |steps: Vec<workload::Step>| {
        let (client, http) = (client.clone(), http.clone());
        tokio::spawn(async move {
            let mut accepted = 0;
            for s in steps {
                if let Some(c) = &s.content {
                    kubo_add(&http, c.clone()).await;
                }
                let a = client.submit_bytes(serde_json::to_vec(&s.tx).unwrap()).await;
                match a.status {
                    TxStatus::Accepted { .. } => accepted += 1,
                    TxStatus::Rejected { .. } => assert!(s.expect_rejected, "{a:?}"),
                    TxStatus::Duplicate { .. } => panic!("{a:?}"),
                }
            }
            accepted
        })
    };
    let half = steps.len() / 2;
    let second = steps.split_off(half);
    accepted += submit(steps).await.unwrap();

    // Two batches on chain; then a snapshot, more batches, and a reorg that
    // takes the later ones away.
    wait_for("two batches on L1", Duration::from_secs(300), || async {
        landed(&http).await.filter(|&n| n >= 1)
    })
    .await;
    let snapshot = rpc(&url, "evm_snapshot", serde_json::json!([])).await;
    let before = events(&url, rollup).await.len();
    let task = submit(second);
    wait_for("more batches on L1", Duration::from_secs(300), || async {
        landed(&http).await.filter(|&n| n as usize > before)
    })
    .await;
    assert_eq!(rpc(&url, "evm_revert", serde_json::json!([snapshot])).await, serde_json::Value::Bool(true));
    assert_eq!(events(&url, rollup).await.len(), before, "the reorg removed the later batches");

    // anvil goes down (dumping its state) and comes back with it.
    anvil.stop();
    assert!(state.exists());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let anvil = Anvil::start(port, &["--block-time", "1", "--load-state", state_arg]).unwrap();
    accepted += task.await.unwrap();

    // Everything proven ends on chain: once each, in order, with the
    // coordinator's roots.
    let sealed = wait_for("every batch on L1", Duration::from_secs(600), || async {
        let root = get_json(&format!("{http}/root")).await;
        let sealed = root["batches_sealed"].as_u64()?;
        let on_chain = events(&anvil.url(), rollup).await.len() as u64;
        (sealed > 0 && on_chain == sealed).then_some(sealed)
    })
    .await;
    let ev = events(&anvil.url(), rollup).await;
    let mut ids = 0;
    for n in 0..sealed {
        let b = get_json(&format!("{http}/batch/{n}")).await;
        assert_eq!(ev[n as usize], (n, root_of(&b["public_inputs"]["new_root"])), "batch {n} on chain");
        ids += b["tx_ids"].as_array().unwrap().len();
    }
    assert_eq!(ids, accepted, "every accepted transaction is in a batch on L1");
    // An outsider replays the chain from the published data alone.
    let out = std::process::Command::new(coordinator_bin().with_file_name("medrollup-client"))
        .args([
            "verify-chain",
            "--l1-rpc",
            &anvil.url(),
            "--rollup",
            &rollup.to_string(),
            "--ipfs-api",
            &http,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify-chain: {text}{}", String::from_utf8_lossy(&out.stderr));
    let summary = format!("{sealed} batches, {accepted} transactions: the published data gives L1's state");
    assert!(text.contains(&summary) && text.contains("= the rollup's current root"), "{text}");
    let c = MedRollup::new(rollup, provider(&anvil.url()));
    let api = get_json(&format!("{http}/root")).await;
    assert_eq!(c.currentRoot().call().await.unwrap(), root_of(&api["root"]), "L1 root = coordinator root");
    assert_eq!(c.batchCount().call().await.unwrap(), sealed);
    let st = wait_for("landings recorded", Duration::from_secs(30), || async {
        let st = get_json(&format!("{http}/l1")).await;
        (st["last_landed"].as_u64() == Some(sealed - 1)).then_some(st)
    })
    .await;
    println!("{sealed} batches on L1, {accepted} transactions; submitter: {st}");
    assert!(st["reorgs"].as_u64().unwrap() >= 1, "the reorg was noticed: {st}");
    let last = get_json(&format!("{http}/batch/{}", sealed - 1)).await;
    let gas = last["l1"]["gas_used"].as_u64().unwrap();
    assert!(gas > 200_000 && gas < 300_000, "gas per batch {gas}");
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("medrollup_l1_gas_per_batch_count"), "gas metric exported");
    // A light client believes the coordinator's state only as L1 backs it.
    use medrollup_circuits::field::Fr;
    use medrollup_circuits::state::{TreeId, leaf_hash, state_root};
    use medrollup_client::light::{LightClient, LightError};
    let instance = Fr::from(medrollup_circuits::sample::INSTANCE);
    let light = LightClient::new(&http, &anvil.url(), rollup, instance).unwrap();
    let doctor = load.admin[0].tx.tx.body.clone();
    let doctor_id = match doctor {
        medrollup_circuits::tx::TxBody::RegisterDoctor { doctor, .. } => doctor,
        other => panic!("the workload starts with a doctor's registration: {other:?}"),
    };
    let leaf = light.leaf(TreeId::Accounts, doctor_id).await.unwrap();
    let api = get_json(&format!("{http}/proof/accounts/{doctor_id}")).await;
    assert_eq!(
        serde_json::to_value(leaf.map(|x| medrollup_circuits::field::fr_to_dec(&x))).unwrap(),
        api["leaf"]
    );
    // A tampered answer: refused, with the reason.
    let mut forged = light.fetch(TreeId::Accounts, doctor_id).await.unwrap();
    forged.leaf[3] += Fr::from(1u64);
    let e = light.verify(&forged).await.unwrap_err();
    assert!(matches!(e, LightError::PathMismatch { .. }), "{e}");
    // A consistent forgery (trees and root recomputed) that is not L1's state.
    forged.tree_roots[0] =
        forged.path.root(forged.index, leaf_hash(&forged.leaf.clone().try_into().unwrap()));
    let roots: [Fr; 4] = forged.tree_roots.clone().try_into().unwrap();
    forged.root = state_root(instance, &roots, forged.audit_count);
    let e = light.verify(&forged).await.unwrap_err();
    assert!(matches!(e, LightError::NotOnL1 { .. }), "{e}");
    assert!(e.to_string().contains("not the chain's state"), "{e}");

    // A restarted coordinator shows the landings recorded before it.
    drop(coordinator);
    let coordinator = Coordinator::start(&CoordinatorOpts {
        l1: Some((&anvil.url(), DEV_KEY, 2)),
        ..CoordinatorOpts::new(&nats, &keys, &data, dir.path(), http_port)
    });
    let st = get_json(&format!("{http}/l1")).await;
    assert_eq!(
        (st["rollup"].as_str(), st["last_landed"].as_u64()),
        (Some(&*rollup.to_string()), Some(sealed - 1)),
        "{st}"
    );
    assert_eq!(st["landed"], 0, "none landed since the restart: {st}");
    let metrics = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    let last = format!("medrollup_last_submitted_batch {}", sealed - 1);
    assert!(metrics.lines().any(|l| l == last), "{last} after the restart:\n{metrics}");
    let st = wait_for("the rollup's owner shown", Duration::from_secs(30), || async {
        let st = get_json(&format!("{http}/l1")).await;
        (!st["owner"].is_null()).then_some(st)
    })
    .await;
    assert_eq!(st["owner"].as_str(), Some(DEV_OWNER), "{st}");
    assert_eq!(st["verifier_upgrade"], serde_json::Value::Null, "{st}");

    // The owner proposes a verifier for other keys: the coordinator shows it
    // and raises the metric its alert watches; withdrawn, it is gone.
    let foreign = foreign_verifier_proposal(&anvil.url(), rollup, true).await;
    let up = wait_for("the proposal shown", Duration::from_secs(30), || async {
        let st = get_json(&format!("{http}/l1")).await;
        (!st["verifier_upgrade"].is_null()).then(|| st["verifier_upgrade"].clone())
    })
    .await;
    assert_eq!(up["verifier"].as_str(), Some(&*foreign.to_string()), "{up}");
    assert_eq!(
        (up["vk_sha256"].as_str(), up["for_our_keys"].as_bool()),
        (Some(&*"ab".repeat(32)), Some(false))
    );
    let metric = |m: &str, name: &str| {
        m.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<i64>().ok()))
    };
    let m = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "medrollup_l1_verifier_upgrade_foreign "), Some(1), "{m}");
    assert_eq!(
        metric(&m, "medrollup_l1_verifier_upgrade_activation_seconds ").map(|a| a as u64),
        up["activation"].as_u64()
    );
    foreign_verifier_proposal(&anvil.url(), rollup, false).await;
    wait_for("the withdrawal shown", Duration::from_secs(30), || async {
        get_json(&format!("{http}/l1")).await["verifier_upgrade"].is_null().then_some(())
    })
    .await;
    let m = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "medrollup_l1_verifier_upgrade_foreign "), Some(0), "{m}");

    // One that reports the farm's key hash but is not its verifier's code (a
    // proxy could run anything once installed): not for our keys, alerted.
    let our_vk = medrollup_circuits::keys::read_manifest(&keys).unwrap().verifying_key_sha256;
    let claimed: [u8; 32] = hex::decode(&our_vk).unwrap().try_into().unwrap();
    // The proposal at `at` as `GET /l1` shows it once it does, judged
    // (for our keys, its code ours) with the foreign-verifier metric.
    let http_ref = &http;
    let judged = |at: Address| async move {
        let http = http_ref;
        let up = wait_for("the proposal shown", Duration::from_secs(30), || async {
            let st = get_json(&format!("{http}/l1")).await;
            let shown = st["verifier_upgrade"]["verifier"].as_str() == Some(&*at.to_string());
            shown.then(|| st["verifier_upgrade"].clone())
        })
        .await;
        let m = reqwest::get(format!("{http}/metrics")).await.unwrap().text().await.unwrap();
        let foreign = metric(&m, "medrollup_l1_verifier_upgrade_foreign ");
        (up["for_our_keys"].as_bool(), up["code_is_ours"].as_bool(), foreign)
    };
    let claiming = claiming_verifier_proposal(&anvil.url(), rollup, true, claimed).await;
    assert_eq!(judged(claiming).await, (Some(false), Some(false), Some(1)));
    // The farm's own verifier code (the one installed, proposed again): for
    // our keys, no alert.
    use alloy::sol_types::SolCall;
    let installed = MedRollup::new(rollup, provider(&anvil.url())).verifier().call().await.unwrap();
    owner_call(&anvil.url(), rollup, MedRollup::proposeVerifierCall { next: installed }.abi_encode()).await;
    assert_eq!(judged(installed).await, (Some(true), Some(true), Some(0)));
    foreign_verifier_proposal(&anvil.url(), rollup, false).await;
    wait_for("the withdrawal shown", Duration::from_secs(30), || async {
        get_json(&format!("{http}/l1")).await["verifier_upgrade"].is_null().then_some(())
    })
    .await;

    // Installed after the delay, it stops the submitter, which says why;
    // once the owner puts the farm's verifier back, the submitter starts
    // again by itself and lands what waited.
    let url = anvil.url();
    let ours = installed;
    let install = |next: Address| {
        let url = url.clone();
        async move {
            if next != ours {
                foreign_verifier_proposal(&url, rollup, true).await;
            } else {
                owner_call(&url, rollup, MedRollup::proposeVerifierCall { next }.abi_encode()).await;
            }
            rpc(&url, "evm_increaseTime", serde_json::json!([submitter::DEFAULT_UPGRADE_DELAY_S])).await;
            rpc(&url, "evm_mine", serde_json::json!([])).await;
            owner_call(&url, rollup, MedRollup::activateVerifierCall {}.abi_encode()).await;
        }
    };
    install(Address::repeat_byte(0xf0)).await;
    // L1's clock is now two days ahead of this machine's: once the
    // coordinator has read it, batches are stamped no earlier.
    let chain_time = submitter::chain_time(&provider(&url)).await.unwrap();
    assert!(chain_time > now() + submitter::DEFAULT_UPGRADE_DELAY_S - 60);
    wait_for("the coordinator read L1's clock", Duration::from_secs(60), || async {
        let st = get_json(&format!("{http}/l1")).await;
        st["chain_time"].as_u64().is_some_and(|t| t >= chain_time).then_some(())
    })
    .await;
    // One more doctor (the fourth clinic's, by the hospital whose turn it is).
    let more = workload::generate(4, now(), "l1-more");
    let a = client.submit_bytes(serde_json::to_vec(&more.admin[3].tx).unwrap()).await;
    let TxStatus::Accepted { batch, .. } = a.status else { panic!("{a:?}") };
    let st = wait_for("the submitter stopped on the verifier", Duration::from_secs(180), || async {
        let st = get_json(&format!("{http}/l1")).await;
        st["error"].as_str().is_some_and(|e| e.contains("the verifier on chain is for")).then_some(st)
    })
    .await;
    assert!(st["error"].as_str().unwrap().contains(&"ab".repeat(32)), "{st}");
    install(ours).await;
    wait_for("the batch landed once the verifier was put back", Duration::from_secs(180), || async {
        let st = get_json(&format!("{http}/l1")).await;
        (st["last_landed"].as_u64() == Some(batch) && st["error"].is_null()).then_some(())
    })
    .await;
    let records = submitter::batch_records(&provider(&url), rollup).await.unwrap();
    let stamped = records.iter().find(|r| r.index == batch).expect("the batch's event").timestamp;
    assert!(stamped >= chain_time, "batch {batch} stamped {stamped}, before L1's clock {chain_time}");

    // The sequencer's key is in no log.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(!text.contains(DEV_KEY), "{} shows the private key", p.display());
        }
    }
    drop(coordinator);
}

/// Runs the coordinator binary to its exit; returns (success, output).
fn coordinator_exit(args: &[&str], key: Option<&str>, data: &std::path::Path) -> (bool, String) {
    let mut cmd = std::process::Command::new(coordinator_bin());
    cmd.args(args).arg("--data-dir").arg(data).env_remove("MEDROLLUP_L1_KEY").env_remove("MEDROLLUP_L1_RPC");
    if let Some(k) = key {
        cmd.env("MEDROLLUP_L1_KEY", k);
    }
    if args.contains(&"--nats-user") {
        cmd.env("MEDROLLUP_NATS_PASSWORD", COORDINATOR.1);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_l1_settings_stop_the_coordinator_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_dir_seeded(canonical::SHAPE, canonical::SEED);
    let keys_arg = keys.to_str().unwrap();
    let data = dir.path().join("data");
    let base = ["--keys-dir", keys_arg, "--l1-rpc", "http://127.0.0.1:9"];

    let (ok, out) = coordinator_exit(&base, None, &data);
    assert!(!ok && out.contains("MEDROLLUP_L1_KEY"), "{out}");
    let secret = "0x1234567890abcdefzz";
    let (ok, out) = coordinator_exit(&base, Some(secret), &data);
    assert!(!ok && out.contains("not 32 bytes of hex") && !out.contains(secret), "{out}");
    let (ok, out) = coordinator_exit(
        &["--keys-dir", keys_arg, "--l1-rollup", "0x0000000000000000000000000000000000000001"],
        Some(DEV_KEY),
        &data,
    );
    assert!(!ok && out.contains("--l1-rollup needs --l1-rpc"), "{out}");

    let nats = Nats::start(dir.path());
    let anvil = Anvil::start(free_port(), &[]).unwrap();
    let url = anvil.url();
    let http = format!("127.0.0.1:{}", free_port());
    let fresh = [
        "--keys-dir",
        keys_arg,
        "--nats-url",
        &nats.url,
        "--nats-user",
        "coordinator",
        "--http",
        &http,
        "--l1-rpc",
        &url,
    ];
    // Deploying needs an owner, and not the sequencer's own account.
    let (ok, out) = coordinator_exit(&fresh, Some(DEV_KEY), &data);
    assert!(!ok && out.contains("pass --l1-owner ADDRESS"), "{out}");
    let sequencer = submitter::parse_key(DEV_KEY).unwrap().address().to_string();
    let (ok, out) =
        coordinator_exit(&[&fresh[..], &["--l1-owner", &sequencer]].concat(), Some(DEV_KEY), &data);
    assert!(!ok && out.contains("is the sequencer's own account"), "{out}");
    assert!(!data.join("l1-deployment.json").exists(), "nothing deployed");

    // A rollup address where there is no contract.
    let (ok, out) = coordinator_exit(
        &[&fresh[..], &["--l1-rollup", "0x00000000000000000000000000000000000000aa"]].concat(),
        Some(DEV_KEY),
        &data,
    );
    assert!(
        !ok && out.to_lowercase().contains("no contract at 0x00000000000000000000000000000000000000aa"),
        "{out}"
    );
    assert!(!out.contains(DEV_KEY), "the key is not echoed: {out}");
}
