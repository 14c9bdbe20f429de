//! Bindings to the contracts in `contracts/src`, and their compiled code.
//!
//! The bytecode is checked in under `contracts/artifacts/` (made by
//! `scripts/contracts`, which builds with forge and checks that a rebuild
//! gives the same bytes), so deploying needs no Solidity toolchain.

use alloy::primitives::Bytes;
use alloy::sol;
use serde::Deserialize;

sol! {
    /// The rollup contract (contracts/src/MedRollup.sol).
    #[sol(rpc)]
    #[derive(Debug)]
    contract MedRollup {
        struct BatchRecord {
            bytes32 oldRoot;
            bytes32 newRoot;
            bytes32 txCommitment;
            uint64 timestamp;
            bytes cid;
        }

        error NotOwner(address caller);
        error NotSequencer(address caller);
        error ZeroAddress();
        error StaleOldRoot(bytes32 current, bytes32 given);
        error NoStateChange();
        error TimestampInFuture(uint64 timestamp, uint256 blockTimestamp);
        error TimestampBeforeLast(uint64 timestamp, uint64 last);
        error BadCid(uint256 length);
        error InvalidProof();
        error NoSuchBatch(uint256 index, uint256 count);
        error OwnerIsSequencer(address account);
        error NoProposal();
        error UpgradeNotDue(uint64 activation, uint256 blockTimestamp);
        error NotPendingOwner(address caller);
        error BadUpgradeDelay(uint64 given, uint64 min, uint64 max);
        error VerifierCodeChanged(bytes32 proposed, bytes32 current);

        event BatchSubmitted(
            uint256 indexed index,
            bytes32 indexed newRoot,
            bytes32 oldRoot,
            bytes32 txCommitment,
            uint64 timestamp,
            bytes cid
        );
        event VerifierChanged(address indexed previous, address indexed next, bytes32 vkHash);
        event VerifierProposed(address indexed next, bytes32 vkHash, bytes32 codeHash, uint64 activation);
        event VerifierProposalCancelled(address indexed next);

        constructor(
            bytes32 genesisRoot_,
            address verifier_,
            address sequencer_,
            address owner_,
            uint64 upgradeDelay_
        );

        function submitBatch(
            bytes32 oldRoot,
            bytes32 newRoot,
            bytes32 txCommitment,
            uint64 timestamp,
            bytes cid,
            uint256[8] proof
        ) external;
        function genesisRoot() external view returns (bytes32);
        function currentRoot() external view returns (bytes32);
        function batchCount() external view returns (uint64);
        function lastTimestamp() external view returns (uint64);
        function batchRecordHash(uint256 index) external view returns (bytes32);
        function isBatchRecord(uint256 index, BatchRecord r) external view returns (bool);
        function vkHash() external view returns (bytes32);
        function verifier() external view returns (address);
        function sequencer() external view returns (address);
        function owner() external view returns (address);
        function pendingOwner() external view returns (address);
        function upgradeDelay() external view returns (uint64);
        function deploymentBlock() external view returns (uint64);
        function pendingVerifier() external view returns (address);
        function pendingVerifierActivation() external view returns (uint64);
        function pendingVerifierCodeHash() external view returns (bytes32);
        function MIN_UPGRADE_DELAY() external view returns (uint64);
        function MAX_UPGRADE_DELAY() external view returns (uint64);
        function proposeVerifier(address next) external;
        function cancelVerifier() external;
        function activateVerifier() external;
        function setSequencer(address next) external;
        function transferOwnership(address next) external;
        function acceptOwnership() external;
    }

    /// The per-record baseline (contracts/src/baseline/DirectIndex.sol).
    #[sol(rpc)]
    #[derive(Debug)]
    contract DirectIndex {
        function index(uint256 record, bytes32 cid) external;
    }

    /// A generated verifier (contracts/src/BatchVerifier.sol).
    #[sol(rpc)]
    #[derive(Debug)]
    contract BatchVerifier {
        function vkHash() external view returns (bytes32);
        function verifyProof(uint256[8] proof, uint256[4] input) external view returns (bool);
    }
}

/// A compiled contract: what `scripts/contracts` extracts from forge's output.
#[derive(Debug, Clone, Deserialize)]
pub struct Artifact {
    /// Contract name.
    pub contract: String,
    /// Creation bytecode.
    pub bytecode: Bytes,
    /// For a verifier: the verifying key sha256 it was generated from.
    #[serde(default)]
    pub vk_sha256: Option<String>,
}

impl Artifact {
    /// Parses an artifact file's text.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The rollup contract's compiled code.
pub fn rollup_artifact() -> Artifact {
    Artifact::parse(include_str!("../../contracts/artifacts/MedRollup.json")).expect("checked-in artifact")
}

/// The checked-in verifier's compiled code (for the canonical keys, see
/// [`crate::canonical`]).
pub fn verifier_artifact() -> Artifact {
    Artifact::parse(include_str!("../../contracts/artifacts/BatchVerifier.json"))
        .expect("checked-in artifact")
}

/// The per-record baseline's compiled code (for the gas comparison).
pub fn direct_index_artifact() -> Artifact {
    Artifact::parse(include_str!("../../contracts/artifacts/DirectIndex.json")).expect("checked-in artifact")
}
