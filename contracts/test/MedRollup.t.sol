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
    MedRollup rollup;
    BatchVerifier verifier;

    function setUp() public {
        verifier = new BatchVerifier();
        rollup = new MedRollup(Fixtures.GENESIS_ROOT, verifier, SEQUENCER);
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

    function test_owner_installs_a_new_verifier() public {
        OtherVerifier next = new OtherVerifier();
        vm.prank(SEQUENCER);
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NotOwner.selector, SEQUENCER));
        rollup.setVerifier(next);
        vm.expectEmit();
        emit MedRollup.VerifierChanged(address(verifier), address(next), keccak256("another circuit"));
        rollup.setVerifier(next);
        assertEq(rollup.vkHash(), keccak256("another circuit"), "new vk hash");
        // Proofs of the old circuit no longer pass.
        vm.expectRevert(abi.encodeWithSelector(MedRollup.InvalidProof.selector));
        submit(Fixtures.batch(0));
    }

    function test_unknown_batch_record_reverts() public {
        MedRollup.BatchRecord memory r;
        vm.expectRevert(abi.encodeWithSelector(MedRollup.NoSuchBatch.selector, 0, 0));
        rollup.isBatchRecord(0, r);
    }
}
