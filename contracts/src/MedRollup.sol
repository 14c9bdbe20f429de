// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IBatchVerifier} from "./IBatchVerifier.sol";

/// @title MedRollup
/// @notice The L1 anchor of the healthcare rollup: the source of truth for
/// state roots. The sequencer submits each batch with a Groth16 proof that
/// the batch's transactions move the state from the current root to the new
/// one; the batch data itself is on IPFS under the CID given here.
///
/// Storage per batch is one slot: the hash of its record (see `recordHash`).
/// The full record is in the `BatchSubmitted` event; anyone holding a record
/// (from the event or from the coordinator) checks it with `isBatchRecord`.
///
/// Roles: the sequencer submits batches; the owner (a key other than the
/// sequencer's, in production a multisig) replaces the sequencer at once and
/// the verifier only after `upgradeDelay`: the verifier decides which state
/// changes are valid, so a new one is announced (`VerifierProposed`) and
/// watched by light clients and operators before it can take effect; it
/// is installed only with the code it had when proposed (`codehash`), so
/// what was watched is what runs. Ownership moves in two steps (the next
/// owner accepts).
contract MedRollup {
    /// @notice A batch as submitted.
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
    event SequencerChanged(address indexed previous, address indexed next);
    event OwnerChanged(address indexed previous, address indexed next);
    event VerifierProposed(address indexed next, bytes32 vkHash, bytes32 codeHash, uint64 activation);
    event VerifierProposalCancelled(address indexed next);
    event OwnershipOffered(address indexed owner, address indexed next);

    /// @notice The shortest `upgradeDelay`: time to notice a proposal.
    uint64 public constant MIN_UPGRADE_DELAY = 1 hours;
    /// @notice The longest `upgradeDelay`: an upgrade stays possible.
    uint64 public constant MAX_UPGRADE_DELAY = 365 days;

    /// @notice The state root before any batch.
    bytes32 public immutable genesisRoot;
    /// @notice Seconds between proposing a verifier and installing it.
    uint64 public immutable upgradeDelay;
    /// @notice The block this contract was deployed in: its events are in
    /// this block or later (nodes bound the block range of a log query).
    uint64 public immutable deploymentBlock;
    // Layout for gas: each counter shares a slot with an address that is set
    // at deployment, so a submission reads two slots for four values and
    // never writes a slot from zero except the batch's own record.
    address public owner;
    address public sequencer;
    /// @notice The last batch's timestamp (Unix seconds).
    uint64 public lastTimestamp;
    IBatchVerifier public verifier;
    /// @notice Batches submitted so far (the next batch's index).
    uint64 public batchCount;
    /// @notice The state root after the last batch.
    bytes32 public currentRoot;
    /// @notice `recordHash` of each batch, by index.
    mapping(uint256 => bytes32) public batchRecordHash;
    // Governance state, in slots of its own: a submission never reads them.
    /// @notice The verifier proposed to replace `verifier` (zero: none).
    IBatchVerifier public pendingVerifier;
    /// @notice When `pendingVerifier` may be installed (Unix seconds).
    uint64 public pendingVerifierActivation;
    /// @notice The account offered ownership (zero: none).
    address public pendingOwner;
    /// @notice The code hash `pendingVerifier` had when proposed.
    bytes32 public pendingVerifierCodeHash;

    /// @param owner_ The owner; refused if it is the sequencer, whose key is
    /// online and used every few seconds.
    /// @param upgradeDelay_ Seconds a proposed verifier waits before it can
    /// be installed, from `MIN_UPGRADE_DELAY` to `MAX_UPGRADE_DELAY`.
    constructor(
        bytes32 genesisRoot_,
        IBatchVerifier verifier_,
        address sequencer_,
        address owner_,
        uint64 upgradeDelay_
    ) {
        if (address(verifier_) == address(0) || sequencer_ == address(0) || owner_ == address(0)) {
            revert ZeroAddress();
        }
        if (owner_ == sequencer_) revert OwnerIsSequencer(owner_);
        if (upgradeDelay_ < MIN_UPGRADE_DELAY || upgradeDelay_ > MAX_UPGRADE_DELAY) {
            revert BadUpgradeDelay(upgradeDelay_, MIN_UPGRADE_DELAY, MAX_UPGRADE_DELAY);
        }
        genesisRoot = genesisRoot_;
        upgradeDelay = upgradeDelay_;
        deploymentBlock = uint64(block.number);
        currentRoot = genesisRoot_;
        owner = owner_;
        sequencer = sequencer_;
        verifier = verifier_;
        emit OwnerChanged(address(0), owner_);
        emit SequencerChanged(address(0), sequencer_);
        emit VerifierChanged(address(0), address(verifier_), verifier_.vkHash());
    }

    /// @notice Submits the next batch. Reverts unless `oldRoot` is the
    /// current root, the state changes, the timestamp is neither in the
    /// future nor before the last batch's, and the proof verifies.
    function submitBatch(
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32 txCommitment,
        uint64 timestamp,
        bytes calldata cid,
        uint256[8] calldata proof
    ) external {
        if (msg.sender != sequencer) revert NotSequencer(msg.sender);
        bytes32 current = currentRoot;
        if (oldRoot != current) revert StaleOldRoot(current, oldRoot);
        // Every transaction bumps a nonce, so a real batch always changes the
        // root; refusing no-op transitions also makes a batch unreplayable.
        if (newRoot == oldRoot) revert NoStateChange();
        if (timestamp > block.timestamp) revert TimestampInFuture(timestamp, block.timestamp);
        uint64 last = lastTimestamp;
        if (timestamp < last) revert TimestampBeforeLast(timestamp, last);
        if (cid.length == 0 || cid.length > 64) revert BadCid(cid.length);
        uint256[4] memory input =
            [uint256(oldRoot), uint256(newRoot), uint256(txCommitment), uint256(timestamp)];
        if (!verifier.verifyProof(proof, input)) revert InvalidProof();

        uint64 index = batchCount;
        batchRecordHash[index] = recordHash(oldRoot, newRoot, txCommitment, timestamp, cid);
        currentRoot = newRoot;
        batchCount = index + 1;
        lastTimestamp = timestamp;
        emit BatchSubmitted(index, newRoot, oldRoot, txCommitment, timestamp, cid);
    }

    /// @notice The hash stored for a batch record.
    function recordHash(
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32 txCommitment,
        uint64 timestamp,
        bytes calldata cid
    ) public pure returns (bytes32) {
        return keccak256(abi.encode(oldRoot, newRoot, txCommitment, timestamp, keccak256(cid)));
    }

    /// @notice Whether `r` is exactly the record of batch `index`.
    function isBatchRecord(uint256 index, BatchRecord calldata r) external view returns (bool) {
        if (index >= batchCount) revert NoSuchBatch(index, batchCount);
        return batchRecordHash[index] == recordHash(r.oldRoot, r.newRoot, r.txCommitment, r.timestamp, r.cid);
    }

    /// @notice The verifying key hash of the installed verifier.
    function vkHash() external view returns (bytes32) {
        return verifier.vkHash();
    }

    /// @notice Announces the verifier of a new circuit version; it can be
    /// installed with `activateVerifier` from `upgradeDelay` seconds on, with
    /// the code it has now. A new proposal replaces the pending one (and
    /// restarts the wait).
    function proposeVerifier(IBatchVerifier next) external onlyOwner {
        if (address(next) == address(0)) revert ZeroAddress();
        uint64 activation = uint64(block.timestamp) + upgradeDelay;
        bytes32 codeHash = address(next).codehash;
        pendingVerifier = next;
        pendingVerifierActivation = activation;
        pendingVerifierCodeHash = codeHash;
        emit VerifierProposed(address(next), next.vkHash(), codeHash, activation);
    }

    /// @notice Withdraws the pending proposal.
    function cancelVerifier() external onlyOwner {
        IBatchVerifier next = pendingVerifier;
        if (address(next) == address(0)) revert NoProposal();
        delete pendingVerifier;
        delete pendingVerifierActivation;
        delete pendingVerifierCodeHash;
        emit VerifierProposalCancelled(address(next));
    }

    /// @notice Installs the pending verifier once its wait is over, if its
    /// code is still the code proposed (a contract redeployed at the same
    /// address is not what was announced).
    function activateVerifier() external onlyOwner {
        IBatchVerifier next = pendingVerifier;
        if (address(next) == address(0)) revert NoProposal();
        uint64 activation = pendingVerifierActivation;
        if (block.timestamp < activation) revert UpgradeNotDue(activation, block.timestamp);
        bytes32 proposed = pendingVerifierCodeHash;
        bytes32 current = address(next).codehash;
        if (current != proposed) revert VerifierCodeChanged(proposed, current);
        delete pendingVerifier;
        delete pendingVerifierActivation;
        delete pendingVerifierCodeHash;
        emit VerifierChanged(address(verifier), address(next), next.vkHash());
        verifier = next;
    }

    /// @notice Replaces the sequencer at once (a sequencer can only submit
    /// proven batches, so this is safe without a wait, and a leaked
    /// sequencer key must be replaceable quickly).
    function setSequencer(address next) external onlyOwner {
        if (next == address(0)) revert ZeroAddress();
        if (next == owner) revert OwnerIsSequencer(next);
        emit SequencerChanged(sequencer, next);
        sequencer = next;
    }

    /// @notice Offers ownership to `next`, who takes it with `acceptOwnership`.
    function transferOwnership(address next) external onlyOwner {
        if (next == address(0)) revert ZeroAddress();
        if (next == sequencer) revert OwnerIsSequencer(next);
        pendingOwner = next;
        emit OwnershipOffered(owner, next);
    }

    /// @notice Takes the ownership offered to the caller.
    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner(msg.sender);
        if (msg.sender == sequencer) revert OwnerIsSequencer(msg.sender);
        emit OwnerChanged(owner, msg.sender);
        owner = msg.sender;
        delete pendingOwner;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }
}
