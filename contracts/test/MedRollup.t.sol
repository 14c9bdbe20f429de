// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CheatTest} from "./Vm.sol";
import {Fixtures} from "./Fixtures.sol";
import {MedRollup} from "../src/MedRollup.sol";
import {BatchVerifier} from "../src/BatchVerifier.sol";
import {IBatchVerifier} from "../src/IBatchVerifier.sol";

/// A verifier for another circuit version (accepts nothing).
contract OtherVerifier is IBatchVerifier {
    function vkHash() external pure returns (bytes32) {
        return keccak256("another circuit");
    }

    function verifyProof(uint256[8] calldata, uint256[4] calldata) external pure returns (bool) {
        return false;
    }
}

/// The rollup contract against proofs made by the real prover
/// (test/Fixtures.sol, from `medrollup-l1 fixtures`).
contract MedRollupTest is CheatTest {
    address constant SEQUENCER = address(0x5E0);
    address constant OWNER = address(0x0A11);
    uint64 constant DELAY = 2 days;
    MedRollup rollup;
    BatchVerifier verifier;

    function setUp() public {
        verifier = new BatchVerifier();
        rollup = new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER, OWNER, DELAY);
        vm.warp(Fixtures.batch(Fixtures.COUNT - 1).timestamp + 60);
    }

    function submit(Fixtures.Batch memory b) internal {
        vm.prank(SEQUENCER);
        rollup.submitBatch(b.oldRoot, b.newRoot, b.txCommitment, b.timestamp, b.cid, b.proof);
    }

    function test_verifier_is_for_the_fixture_keys() public view {
        assertEq(verifier.vkHash(), Fixtures.VK_SHA256, "vk hash");
        assertEq(rollup.vkHash(), Fixtures.VK_SHA256, "vk hash through the rollup");
    }

    function test_the_deployment_block_is_recorded() public {
        assertEq(rollup.deploymentBlock(), block.number, "deployed in this block");
        vm.roll(block.number + 1000);
        MedRollup later = new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER, OWNER, DELAY);
        assertEq(later.deploymentBlock(), block.number, "a later deployment's block");
        assertTrue(later.deploymentBlock() != rollup.deploymentBlock(), "two deployments, two blocks");
    }

    function test_valid_proofs_are_accepted_in_order() public {
        for (uint256 i = 0; i < Fixtures.COUNT; i++) {
            Fixtures.Batch memory b = Fixtures.batch(i);
            assertEq(rollup.currentRoot(), b.oldRoot, "old root");
            vm.expectEmit();
            emit MedRollup.BatchSubmitted(i, b.newRoot, b.oldRoot, b.txCommitment, b.timestamp, b.cid);
            submit(b);
            assertEq(rollup.currentRoot(), b.newRoot, "new root");
            assertEq(rollup.batchCount(), i + 1, "count");
            MedRollup.BatchRecord memory r = MedRollup.BatchRecord(b.oldRoot, b.newRoot, b.txCommitment, b.timestamp, b.cid);
            assertTrue(rollup.isBatchRecord(i, r), "record");
            r.txCommitment = bytes32(uint256(r.txCommitment) ^ 1);
            assertTrue(!rollup.isBatchRecord(i, r), "tampered record");
        }
    }

    function test_verifier_accepts_the_fixture_and_rejects_a_changed_input() public view {
        Fixtures.Batch memory b = Fixtures.batch(0);
        uint256[4] memory input = [uint256(b.oldRoot), uint256(b.newRoot), uint256(b.txCommitment), uint256(b.timestamp)];
        assertTrue(verifier.verifyProof(b.proof, input), "valid");
        input[3] += 1;
        assertTrue(!verifier.verifyProof(b.proof, input), "other timestamp");
        input[3] -= 1;
        // An input moved up by the field modulus is refused, not reduced.
        input[2] += 0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001;
        assertTrue(!verifier.verifyProof(b.proof, input), "input >= r");
    }

    function test_wrong_proof_reverts() public {
        Fixtures.Batch memory b = Fixtures.batch(0);
        b.proof = Fixtures.batch(1).proof;
        vm.expectRevert(abi.encodeWithSelector(MedRollup.InvalidProof.selector));
        submit(b);
        b = Fixtures.batch(0);
        b.proof[7] = 5; // C not on the curve: the pairing precompile fails
        vm.expectRevert(abi.encodeWithSelector(MedRollup.InvalidProof.selector));
        submit(b);
        b = Fixtures.batch(0);
        b.txCommitment = bytes32(uint256(b.txCommitment) ^ 1);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.InvalidProof.selector));
        submit(b);
    }

    function test_wrong_old_root_reverts() public {
        Fixtures.Batch memory b = Fixtures.batch(1);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.StaleOldRoot.selector, Fixtures.GENESIS_ROOT, b.oldRoot));
        submit(b);
    }

    function test_replayed_batch_reverts() public {
        Fixtures.Batch memory b = Fixtures.batch(0);
        submit(b);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.StaleOldRoot.selector, b.newRoot, b.oldRoot));
        submit(b);
        assertEq(rollup.batchCount(), 1, "count after replay");
    }

    function test_non_sequencer_reverts() public {
        Fixtures.Batch memory b = Fixtures.batch(0);
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NotSequencer.selector, address(0xBAD)));
        rollup.submitBatch(b.oldRoot, b.newRoot, b.txCommitment, b.timestamp, b.cid, b.proof);
    }

    function test_future_timestamp_reverts() public {
        Fixtures.Batch memory b = Fixtures.batch(0);
        vm.warp(b.timestamp - 1);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.TimestampInFuture.selector, b.timestamp, b.timestamp - 1));
        submit(b);
    }

    function test_timestamp_before_last_reverts() public {
        submit(Fixtures.batch(0));
        Fixtures.Batch memory b = Fixtures.batch(1);
        b.timestamp = Fixtures.batch(0).timestamp - 1;
        vm.expectRevert(abi.encodeWithSelector(MedRollup.TimestampBeforeLast.selector, b.timestamp, Fixtures.batch(0).timestamp));
        submit(b);
    }

    function test_no_op_transition_and_bad_cid_revert() public {
        Fixtures.Batch memory b = Fixtures.batch(0);
        b.newRoot = b.oldRoot;
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NoStateChange.selector));
        submit(b);
        b = Fixtures.batch(0);
        b.cid = "";
        vm.expectRevert(abi.encodeWithSelector(MedRollup.BadCid.selector, 0));
        submit(b);
    }

    function test_owner_may_not_be_the_sequencer() public {
        vm.expectRevert(abi.encodeWithSelector(MedRollup.OwnerIsSequencer.selector, SEQUENCER));
        new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER, SEQUENCER, DELAY);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.ZeroAddress.selector));
        new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER, address(0), DELAY);
        assertEq(uint160(rollup.owner()), uint160(OWNER), "owner");
        assertEq(rollup.upgradeDelay(), DELAY, "delay");
    }

    function test_a_new_verifier_waits_out_the_delay() public {
        OtherVerifier next = new OtherVerifier();
        // Neither the sequencer nor anyone but the owner may propose.
        vm.prank(SEQUENCER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NotOwner.selector, SEQUENCER));
        rollup.proposeVerifier(next);
        uint64 activation = uint64(block.timestamp) + DELAY;
        vm.expectEmit();
        emit MedRollup.VerifierProposed(address(next), keccak256("another circuit"), address(next).codehash, activation);
        vm.prank(OWNER);
        rollup.proposeVerifier(next);
        assertEq(uint160(address(rollup.pendingVerifier())), uint160(address(next)), "pending");
        assertEq(rollup.pendingVerifierActivation(), activation, "activation");
        // Not before its time, and the old circuit's proofs still pass meanwhile.
        vm.warp(activation - 1);
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.UpgradeNotDue.selector, activation, activation - 1));
        rollup.activateVerifier();
        submit(Fixtures.batch(0));
        vm.warp(activation);
        vm.prank(SEQUENCER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NotOwner.selector, SEQUENCER));
        rollup.activateVerifier();
        vm.expectEmit();
        emit MedRollup.VerifierChanged(address(verifier), address(next), keccak256("another circuit"));
        vm.prank(OWNER);
        rollup.activateVerifier();
        assertEq(rollup.vkHash(), keccak256("another circuit"), "new vk hash");
        assertEq(uint160(address(rollup.pendingVerifier())), 0, "no longer pending");
        // Proofs of the old circuit no longer pass.
        vm.expectRevert(abi.encodeWithSelector(MedRollup.InvalidProof.selector));
        submit(Fixtures.batch(1));
        // And the proposal is used up.
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NoProposal.selector));
        rollup.activateVerifier();
    }

    function test_a_cancelled_or_replaced_proposal_is_not_installed() public {
        OtherVerifier first = new OtherVerifier();
        OtherVerifier second = new OtherVerifier();
        vm.prank(OWNER);
        rollup.proposeVerifier(first);
        // A second proposal replaces the first and restarts the wait.
        vm.warp(block.timestamp + DELAY - 1);
        uint64 activation = uint64(block.timestamp) + DELAY;
        vm.prank(OWNER);
        rollup.proposeVerifier(second);
        vm.warp(block.timestamp + 1);
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.UpgradeNotDue.selector, activation, block.timestamp));
        rollup.activateVerifier();
        vm.expectEmit();
        emit MedRollup.VerifierProposalCancelled(address(second));
        vm.prank(OWNER);
        rollup.cancelVerifier();
        vm.warp(activation);
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NoProposal.selector));
        rollup.activateVerifier();
        assertEq(uint160(address(rollup.verifier())), uint160(address(verifier)), "verifier kept");
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NoProposal.selector));
        rollup.cancelVerifier();
    }

    function test_the_upgrade_delay_is_bounded() public {
        uint64 min = rollup.MIN_UPGRADE_DELAY();
        uint64 max = rollup.MAX_UPGRADE_DELAY();
        assertEq(min, 1 hours, "min");
        assertEq(max, 365 days, "max");
        for (uint256 i = 0; i < 2; i++) {
            uint64 bad = i == 0 ? min - 1 : max + 1;
            vm.expectRevert(abi.encodeWithSelector(MedRollup.BadUpgradeDelay.selector, bad, min, max));
            new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER, OWNER, bad);
        }
        assertEq(new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER, OWNER, min).upgradeDelay(), min, "min ok");
        assertEq(new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER, OWNER, max).upgradeDelay(), max, "max ok");
    }

    function test_a_verifier_whose_code_changed_since_its_proposal_is_not_installed() public {
        OtherVerifier next = new OtherVerifier();
        bytes32 proposed = address(next).codehash;
        vm.prank(OWNER);
        rollup.proposeVerifier(next);
        assertEq(rollup.pendingVerifierCodeHash(), proposed, "code hash kept");
        // Other code at the proposed address by the time it is due (as a
        // contract destroyed and created again at one address would be).
        vm.etch(address(next), address(verifier).code);
        bytes32 current = address(next).codehash;
        vm.warp(rollup.pendingVerifierActivation());
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.VerifierCodeChanged.selector, proposed, current));
        rollup.activateVerifier();
        assertEq(uint160(address(rollup.verifier())), uint160(address(verifier)), "verifier kept");
        // Cancelled, the code hash goes with the proposal.
        vm.prank(OWNER);
        rollup.cancelVerifier();
        assertEq(rollup.pendingVerifierCodeHash(), bytes32(0), "no code hash pending");
    }

    function test_ownership_moves_in_two_steps() public {
        address next = address(0xB0B);
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.OwnerIsSequencer.selector, SEQUENCER));
        rollup.transferOwnership(SEQUENCER);
        vm.prank(OWNER);
        rollup.transferOwnership(next);
        assertEq(uint160(rollup.owner()), uint160(OWNER), "owner until accepted");
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NotPendingOwner.selector, address(0xBAD)));
        rollup.acceptOwnership();
        vm.expectEmit();
        emit MedRollup.OwnerChanged(OWNER, next);
        vm.prank(next);
        rollup.acceptOwnership();
        assertEq(uint160(rollup.owner()), uint160(next), "new owner");
        assertEq(uint160(rollup.pendingOwner()), 0, "offer used");
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NotOwner.selector, OWNER));
        rollup.setSequencer(address(0x5E1));
    }

    function test_owner_replaces_the_sequencer_at_once() public {
        address next = address(0x5E1);
        vm.prank(OWNER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.OwnerIsSequencer.selector, OWNER));
        rollup.setSequencer(OWNER);
        vm.prank(OWNER);
        rollup.setSequencer(next);
        // The old sequencer's key no longer submits; the new one does.
        Fixtures.Batch memory b = Fixtures.batch(0);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NotSequencer.selector, SEQUENCER));
        submit(b);
        vm.prank(next);
        rollup.submitBatch(b.oldRoot, b.newRoot, b.txCommitment, b.timestamp, b.cid, b.proof);
        assertEq(rollup.batchCount(), 1, "count");
    }

    function test_unknown_batch_record_reverts() public {
        MedRollup.BatchRecord memory r;
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NoSuchBatch.selector, 0, 0));
        rollup.isBatchRecord(0, r);
    }
}
